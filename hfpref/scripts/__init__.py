"""
The training scripts behind `recipes/*.py` (as `trl.scripts` behind TRL's recipes): each module has
`main(script_args, training_args, model_args)` and `make_parser()`. The quickstart chains them.
"""
