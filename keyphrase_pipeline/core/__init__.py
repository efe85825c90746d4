"""The foundation every room stands on: settings, errors and exit codes, the lake and its layout, data contracts and
conforming inputs, Spark sessions, the ground-truth hook."""
