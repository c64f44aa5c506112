"""The web UI at / and the OHIF viewer at /viewer."""
