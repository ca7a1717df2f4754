"""Project files a user edited (or someone crafted): every wrong field of ``project.json`` and ``jobs.json`` is a
one-line ProjectError naming the file and the field, never a TypeError or AttributeError from deep inside."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dnd_engine.errors import DnDError
from dnd_engine.project import ExtractionPlan, JobBook, Project, ProjectError, TrainingPlan
from dnd_engine.project.schema import (Field, check_document, dataclass_fields, describe, integer, list_of, optional,
                                       record, text)

# every kind of wrong value: JSON's types, empty and nested-wrong forms, and values of the right type but absurd
WRONG = [None, True, 0, -5, 2.5, 1e308, "", "/etc", "x" * 300, [], [None], [1, 2], ["/etc"], [[1]], {},
         {"a": 1}, {"x": [None]}, {"objective_power": "ten"}]


def _valid_manifest(tmp_path: Path) -> dict:
    p = Project.create(tmp_path / "proj", name="Cohort")
    data = json.loads((p.root / "project.json").read_text())
    data.update(slides=["/data/slides/a.svs", "/data/slides/b.tif"], labels="labels.csv",
                labels_source="/data/labels.csv", features="features/resnet50_trunc",
                extraction=ExtractionPlan().to_dict(), runs=["runs/r/abmil", "/elsewhere/runs/r/transmil"],
                model="runs/r/abmil/model.safetensors",
                slide_overrides={"123-abcdef": {"objective_power": 20.0, "name": "a.svs"},
                                 "456-012345": {"mpp": 0.5, "name": "b.tif"}})
    return data


def _paths(data, prefix=()):
    """Every field path of a JSON document (a key or list index at each step)."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _mutants(data):
    """(label, field name, mutated document) for each field replaced by each wrong value, and each field removed."""
    for path in list(_paths(data)):
        for value in WRONG + ["<removed>"]:
            doc = copy.deepcopy(data)
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            if value == "<removed>":
                if isinstance(parent, list):
                    continue
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(value)
            yield f"{'.'.join(map(str, path))}={value!r:.30}", path, doc


def _assert_clear(exc: DnDError, file: str, path) -> None:
    message = str(exc)
    assert "\n" not in message, message
    assert message.startswith(f"{file}:") or f"/{file}:" in message.split(" ")[0], message
    top = next(str(k) for k in path if not isinstance(k, int))
    assert top in message or file == "jobs.json", message   # job records are named by their place: jobs[0].state
    assert "Traceback" not in message and "NoneType" not in message and "object has no attribute" not in message


def _use(project: Project) -> None:
    """What the app does with a project it opened: the paths, the next step, the overrides, a save."""
    project.slide_paths(), project.missing_slides(), project.run_dirs(), project.next_step()
    project.labels_path, project.features_dir, project.model_path, project.overrides_by_path()
    project.save()
    Project.open(project.root)


def test_every_wrong_manifest_field_is_a_clear_project_error(tmp_path):
    valid = _valid_manifest(tmp_path)
    root = tmp_path / "proj"
    _use(Project.open(root))        # the valid one opens
    outcomes = {"opened": 0, "refused": 0}
    for label, path, doc in _mutants(valid):
        (root / "project.json").write_text(json.dumps(doc))
        try:
            project = Project.open(root)
        except ProjectError as exc:
            outcomes["refused"] += 1
            _assert_clear(exc, "project.json", path)
            continue
        except Exception as exc:   # noqa: BLE001 - the point: nothing else may come out
            pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
        outcomes["opened"] += 1
        try:
            _use(project)
        except DnDError:
            pass
        except Exception as exc:   # noqa: BLE001
            pytest.fail(f"{label} opened, then {type(exc).__name__}: {exc}")
    assert outcomes["refused"] > 100 and outcomes["opened"] > 10, outcomes


def test_slides_must_be_a_list_of_slide_paths(tmp_path):
    valid = _valid_manifest(tmp_path)
    root = tmp_path / "proj"
    for slides, words in [("/etc", "'slides' must be a list of slide paths, got a string ('/etc')"),
                          (["/etc"], "'slides[0]' must be the absolute path of a slide file"),
                          (["a.svs"], "'slides[0]' must be the absolute path of a slide file"),
                          (["/x/a.svs", "/y/a.tif"], "two slides with the id 'a'")]:
        (root / "project.json").write_text(json.dumps({**valid, "slides": slides}))
        with pytest.raises(ProjectError) as info:
            Project.open(root)
        assert str(info.value).startswith("project.json: ") and words in str(info.value), str(info.value)
    (root / "project.json").write_text(json.dumps({**valid, "labels": "../../etc/passwd"}))
    with pytest.raises(ProjectError, match="'labels' must be a file name inside the project"):
        Project.open(root)


def test_the_last_extraction_settings_are_typed(tmp_path):
    """The wizard starts from ``extraction``: a string where its magnification belongs was a TypeError there."""
    valid = _valid_manifest(tmp_path)
    root = tmp_path / "proj"
    (root / "project.json").write_text(json.dumps({**valid, "extraction": {**valid["extraction"],
                                                                           "magnification": "ten"}}))
    with pytest.raises(ProjectError, match=r"^project\.json: 'extraction\.magnification' must be a number, "
                                           r"got a string \('ten'\)$"):
        Project.open(root)
    (root / "project.json").write_text(json.dumps({**valid, "extraction": {**valid["extraction"], "later": 1}}))
    assert Project.open(root).extraction["later"] == 1     # a newer app's setting is kept


def test_unknown_manifest_keys_are_kept_but_ignored(tmp_path):
    valid = _valid_manifest(tmp_path)
    root = tmp_path / "proj"
    (root / "project.json").write_text(json.dumps({**valid, "future_field": {"x": [1, 2]}}))
    project = Project.open(root)
    assert not hasattr(project, "future_field")
    project.name = "Renamed"
    project.save()
    saved = json.loads((root / "project.json").read_text())
    assert saved["future_field"] == {"x": [1, 2]} and saved["name"] == "Renamed" and "unknown_keys" not in saved
    del valid["name"]                                   # hand-written without a name: the folder names it
    (root / "project.json").write_text(json.dumps(valid))
    assert Project.open(root).name == "proj"


def _valid_jobs(tmp_path: Path) -> tuple[Project, dict]:
    project = Project.create(tmp_path / "jp")
    book = JobBook(project)
    a = book.add("extract", "Extract", {"extraction": ExtractionPlan().to_dict(), "group": "g1"})
    book.add("train", "Train abmil", {"training": TrainingPlan(n_clusters=2).to_dict(), "method": "abmil",
                                      "group": "g1"})
    book.mark(a.id, "done", "8 slides")
    return project, json.loads((project.root / "jobs.json").read_text())


def test_every_wrong_job_record_field_is_a_clear_project_error(tmp_path):
    project, valid = _valid_jobs(tmp_path)
    path = project.root / "jobs.json"
    outcomes = {"opened": 0, "refused": 0}
    for label, where, doc in list(_mutants(valid)) + [(f"top={v!r:.30}", ("jobs",), v) for v in WRONG]:
        path.write_text(json.dumps(doc))
        try:
            book = JobBook(project)
        except ProjectError as exc:
            outcomes["refused"] += 1
            _assert_clear(exc, "jobs.json", where)
            assert "jobs" in str(exc) or "the file" in str(exc), str(exc)
            continue
        except Exception as exc:   # noqa: BLE001
            pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
        outcomes["opened"] += 1
        try:     # what the app does with the book: lists, adds, marks, resumes from the specs
            book.interrupted(), book.find(state="done"), [r.resumable for r in book.records]
            rec = book.add("train", "again", {})
            book.mark(rec.id, "running")
            for r in book.records:
                if r.kind == "extract" and "extraction" in r.spec:
                    ExtractionPlan.from_dict(r.spec["extraction"])
                elif r.kind == "train" and "training" in r.spec:
                    TrainingPlan.from_dict(r.spec["training"]).run_dir(project, str(r.spec.get("method", "abmil")))
        except DnDError:
            pass
        except Exception as exc:   # noqa: BLE001
            pytest.fail(f"{label} loaded, then {type(exc).__name__}: {exc}")
    assert outcomes["refused"] > 100 and outcomes["opened"] > 10, outcomes


def test_job_book_messages_name_the_record_and_field(tmp_path):
    project, valid = _valid_jobs(tmp_path)
    path = project.root / "jobs.json"
    cases = [
        ({"jobs": "all"}, "jobs.json: 'jobs' must be a list of job records, got a string ('all')"),
        ([1, 2], "jobs.json: the file must be an object with a 'jobs' list, got a list of 2 items"),
    ]
    bad_pid = copy.deepcopy(valid)
    bad_pid["jobs"][1]["pid"] = "123"
    cases.append((bad_pid, "jobs.json: 'jobs[1].pid' must be a process id"))
    bad_plan = copy.deepcopy(valid)
    bad_plan["jobs"][1]["spec"]["training"]["methods"] = "abmil"
    cases.append((bad_plan, "jobs.json: 'jobs[1].spec.training.methods' must be a list of strings, got a string"))
    bad_setting = copy.deepcopy(valid)
    bad_setting["jobs"][0]["spec"]["extraction"]["rm_rf"] = True
    cases.append((bad_setting, "'jobs[0].spec.extraction' must be an object (the extraction settings) without "
                               "unknown settings, found 'rm_rf'"))
    for doc, words in cases:
        path.write_text(json.dumps(doc))
        with pytest.raises(ProjectError) as info:
            JobBook(project)
        assert words in str(info.value), str(info.value)
    extra = copy.deepcopy(valid)
    extra["written_by"] = "a newer app"
    extra["jobs"][0]["priority"] = 3
    path.write_text(json.dumps(extra))
    book = JobBook(project)
    book.add("extract", "more", {})
    saved = json.loads(path.read_text())
    assert saved["written_by"] == "a newer app" and saved["jobs"][0]["priority"] == 3
    assert "unknown_keys" not in saved["jobs"][0]


def test_schema_helper_checks_dataclasses_and_says_what_it_got():
    assert describe(None) == "null" and describe("/etc") == "a string ('/etc')" and describe([1]) == "a list of 1 item"
    schema = dataclass_fields(TrainingPlan)
    assert set(schema) == set(TrainingPlan().to_dict()) and not any(f.required for f in schema.values())
    doc = {"a": [{"b": 1}, {"b": "two"}]}
    check = record({"a": Field(list_of(record({"b": Field(integer(0))}), "a list of objects"), required=True)})
    with pytest.raises(DnDError, match=r"^f\.json: 'a\[1\]\.b' must be a whole number ≥ 0, got a string \('two'\)$"):
        check_document(doc, check, "f.json")
    with pytest.raises(DnDError, match="'c' must be a string or null, got a number"):
        check_document({"c": 3}, record({"c": Field(optional(text()))}), "f.json")
    with pytest.raises(DnDError, match="'a' must be present, it is missing"):
        check_document({}, check, "f.json")


def test_a_project_saved_on_another_system_opens_with_its_slides_missing(tmp_path):
    valid = _valid_manifest(tmp_path)
    root = tmp_path / "proj"
    other = "C:\\Slides\\a.svs" if Path("/x").is_absolute() else "/mnt/slides/a.svs"
    (root / "project.json").write_text(json.dumps({**valid, "slides": [other]}))
    project = Project.open(root)
    assert project.slides == [other] and len(project.missing_slides()) == 1
