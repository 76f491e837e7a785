"""Old spellings of the names issue 31 renamed keep working for one release, with a DeprecationWarning."""

import numpy as np
import pytest
import torch

from samcl.inference.automatic import GeneratedMasks
from samcl.types import Prediction


def test_selector_score_reads_and_writes_domain_score_with_a_warning():
    prediction = Prediction(np.zeros((1, 2, 2), bool), np.zeros(1, np.float32), "red", torch.zeros(1, 2, 2),
                            domain_score=0.25)
    with pytest.warns(DeprecationWarning, match="domain_score"):
        assert prediction.selector_score == 0.25
    with pytest.warns(DeprecationWarning):
        prediction.selector_score = 0.5
    assert prediction.domain_score == 0.5
    generated = GeneratedMasks("base", None)
    with pytest.warns(DeprecationWarning):
        assert generated.selector_score is None


def test_the_two_job_classes_keep_their_old_name_with_a_warning():
    from samcl.bench import jobs
    from samcl.serve import model
    with pytest.warns(DeprecationWarning, match="ModelTask"):
        assert model.Job is model.ModelTask
    with pytest.warns(DeprecationWarning, match="ProtocolRun"):
        assert jobs.Job is jobs.ProtocolRun
