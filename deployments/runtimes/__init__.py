"""Where the deploy step puts an app: one module per runtime (NORN_RUNTIME).

Each has `deploy(ctx)`, called by deployments/steps/deploy.py with the step's
Context once the image is built (and pushed, when a registry is configured).
"""
