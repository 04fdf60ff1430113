"""The quality-diversity slider demo: the engine (models, requests, generation), the weight dial (the merge at λ written in place), the Gradio app."""
