"""The foundation every stage uses: settings, lake layout, data contracts, Spark sessions, errors, command line."""
