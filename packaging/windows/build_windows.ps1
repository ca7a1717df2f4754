# Build D&D Studio for Windows x64: PyInstaller bundle, selftest, then the Inno Setup installer.
# Not run on the Linux build machine (see packaging/README.md). Needs: Python 3.11 (x64, python.org build),
# Inno Setup 6 (iscc.exe on PATH or in its default folder). From the repository root:
#
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build_windows.ps1 [-Variant cpu|gpu]
#
# cpu: PyPI's Windows torch wheels are CPU-only builds already. gpu: the CUDA wheels from the PyTorch index
# (set $env:TORCH_GPU_INDEX to change it).
param([ValidateSet("cpu", "gpu")][string]$Variant = "cpu")
$ErrorActionPreference = "Stop"
Set-Location (Resolve-Path "$PSScriptRoot\..\..")
$Version = (Select-String -Path dnd_engine\__init__.py -Pattern '__version__ = "(.*)"').Matches[0].Groups[1].Value
$Venv = "build\venv-win-$Variant"

if (-not (Test-Path "$Venv\Scripts\python.exe")) {
    py -3.11 -m venv $Venv
    & "$Venv\Scripts\python.exe" -m pip install --upgrade pip
    if ($Variant -eq "gpu") {
        $index = if ($env:TORCH_GPU_INDEX) { $env:TORCH_GPU_INDEX } else { "https://download.pytorch.org/whl/cu130" }
        & "$Venv\Scripts\python.exe" -m pip install "torch==2.14.1" "torchvision==0.29.1" --index-url $index
    } else {
        & "$Venv\Scripts\python.exe" -m pip install "torch==2.14.1" "torchvision==0.29.1"
    }
    & "$Venv\Scripts\python.exe" -m pip install ".[gui]" "pyinstaller>=6.10"
    if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
}

$env:DND_VARIANT = $Variant
& "$Venv\Scripts\python.exe" -m PyInstaller --noconfirm --log-level WARN `
    --distpath "dist\pyinstaller-$Variant" --workpath "build\pyinstaller-win-$Variant" packaging\dnd-studio.spec
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }

# the GUI exe has no console: the console twin prints the selftest's line
$env:QT_QPA_PLATFORM = "offscreen"
& "dist\pyinstaller-$Variant\dnd-studio\dnd-studio-console.exe" --selftest
if ($LASTEXITCODE -ne 0) { throw "the bundle's selftest failed" }
Remove-Item Env:\QT_QPA_PLATFORM

$iscc = (Get-Command iscc.exe -ErrorAction SilentlyContinue).Source
if (-not $iscc) { $iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe" }
& $iscc "/DVariant=$Variant" "/DAppVersion=$Version" packaging\windows\dnd-studio.iss
if ($LASTEXITCODE -ne 0) { throw "Inno Setup failed" }
Get-ChildItem dist\*setup.exe | Format-Table Name, Length
