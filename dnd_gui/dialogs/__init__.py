"""Small dialogs: a slide's magnification, the app's settings."""
