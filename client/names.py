"""The served ensemble's name and the default server address, importing nothing: what names the server without
the client's machinery (``serving.admin``, the containers' probes, imports them at no cost)."""

ENSEMBLE = "electra_qa"  # model_repository/electra_qa: the model every client call asks
DEFAULT_URL = "localhost:8001"  # make serve's default gRPC port on this machine
