"""Datasets that work offline: synthetic shapes, scikit-learn digits, ImageFolder; loaders."""
