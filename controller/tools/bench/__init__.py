"""`edge-mpc bench gradient|mpc|lockstep`: each suite times edge-mpc beside a baseline in the same run."""
