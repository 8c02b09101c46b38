"""The Kubeflow Pipelines side of imagenet-tfrecords: components, pipelines, and the run, compile
and submit commands. Everything here is a thin wrapper around the core, ``imagenet_tfrecords``,
which never imports kfp.

Compiled, in a source checkout: ``components/<name>.yaml`` (each component, for
``kfp.components.load_component_from_file``) and ``pipelines/tinyimagenet_to_tfrecords.yaml`` (the
pipeline, for the Kubeflow UI, ``kfp.Client`` or as a step of a larger pipeline); the wheel carries the
same files in ``imagenet_tfrecords_kfp/compiled/`` (``compile.compiled_file``); see compile.py.
"""
