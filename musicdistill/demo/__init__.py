"""The quality-diversity slider demo: the engine (models, requests, generation), the merge cache, the Gradio app."""
