"""Backend tests of the first share of the fusion layers (see `harness`),
of the unimodal auxiliary losses, and of the harness itself."""

from tests.backends.harness import (backend_tests, known_failures_name_real_cases,
                                    shares_cover_every_layer,
                                    unimodal_losses_in_each_backends_training_step)

results, test_every_layer_trains_and_reloads, test_contract = backend_tests(share=0)
test_unimodal_losses_in_each_backends_training_step = \
    unimodal_losses_in_each_backends_training_step
test_known_failures_name_real_cases = known_failures_name_real_cases
test_shares_cover_every_layer = shares_cover_every_layer
