"""Methods: how a run uses its backbone. One class + one yaml (conf/method/<name>.yaml, whose
`_target_` names the class) each; train.run() calls only the `Method` interface (base.py)."""
