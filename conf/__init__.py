# The configs as a package (shotlab.conf in the wheel), so Hydra finds them with pkg://shotlab.conf.
