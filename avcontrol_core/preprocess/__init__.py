"""Preprocessors that turn media into control signals: visual (edges, depth, pose, masks, fitting a clip to the
model grid) and audio. Each loads its weights only from files the user placed in a model folder, never from a hub.
Submodules import their heavy dependencies (OpenCV, controlnet-aux, transformers, mediapipe, onnxruntime) only
when a preprocessor runs."""
