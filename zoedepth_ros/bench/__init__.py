"""The parts of `zoedepth-ros benchmark` (the command itself is `zoedepth_ros.benchmark`): the
models timed (`models`: our engine and the transformers port with the same weights), the timing
rounds and statistics every part shares (`timing`), one module per part (`forward`, `estimator`,
`node`; the node part's DDS client lives in `zoedepth_ros.ros.bench_client`), and what is printed
and written (`report`). A new part is a new module here and a line in the command.

Importing this package imports nothing.
"""
