"""Backend tests of the second share of the fusion layers (see `harness`)."""

from tests.backends.harness import backend_tests

results, test_every_layer_trains_and_reloads, test_contract = backend_tests(share=1)
