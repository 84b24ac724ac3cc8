"""The local multi-node sandbox (``appliance-sandbox``)."""
