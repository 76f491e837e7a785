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


def test_as_base_learns_without_a_module_with_a_warning(tiny_backbone):
    from helpers import toy_samples

    from samcl import SAMCL, TrainConfig
    from samcl.store import BASE_MODEL

    samcl = SAMCL.create(tiny_backbone)
    with pytest.warns(DeprecationWarning, match="without_module") as caught:
        samcl.learn("general", toy_samples(4, (120, 120, 120), 3), TrainConfig(epochs=1, progress=False),
                    as_base=True)
    assert caught[0].filename == __file__  # the caller's line: what Python's default filter shows
    assert [d.kind for d in samcl.module_set.domains] == ["no_module"]
    with pytest.warns(DeprecationWarning, match="BASE_MODEL"):
        from samcl.store import BASE_CLASS
    assert BASE_CLASS == BASE_MODEL == "base"


def test_the_as_base_flag_still_parses_with_one_warning_line(capsys):
    from samcl.cli.parser import build_parser

    for twice in ([], ["--as-base"]):  # given twice: still one line
        args = build_parser().parse_args(["learn", "s", "--domain", "d", "--data", "x", "--as-base", *twice])
        assert args.without_module is True
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("samcl: warning: --as-base is renamed --without-module")
    assert build_parser().parse_args(["learn", "s", "--domain", "d", "--data", "x"]).without_module is False


def test_the_feature_buffer_keeps_its_old_names_with_a_warning():
    import samcl.selector as selector

    buffer = selector.FeatureBuffer(4, torch.ones(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.warns(DeprecationWarning, match="FeatureBuffer"):
        assert selector.EmbeddingBuffer is selector.FeatureBuffer
    with pytest.warns(DeprecationWarning, match="features"):
        assert torch.equal(buffer.embeddings, buffer.features)


def test_the_selector_keeps_its_class_names_with_a_warning():
    import samcl.selector as selector

    ncm = selector.make_selector(selector.SelectorConfig(kind="ncm"), 8)
    with pytest.warns(DeprecationWarning, match="add_domain"):
        ncm.add_class(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)))
    ncm.add_domain(torch.randn(6, 16, generator=torch.Generator().manual_seed(1)) + 3)
    with pytest.warns(DeprecationWarning, match="num_domains"):
        assert ncm.classes == ncm.num_domains == 2
    with pytest.warns(DeprecationWarning, match="merge_domains"):
        ncm.merge_classes(0, 1)
    with pytest.warns(DeprecationWarning, match="remove_domain"):
        ncm.remove_class(0)
    assert ncm.num_domains == 0
    with pytest.warns(DeprecationWarning, match="DomainStats"):
        assert selector.ClassStats is selector.DomainStats


def test_the_classes_flag_of_import_reference_still_parses_with_one_warning_line(capsys):
    from samcl.cli.parser import build_parser

    argv = ["import-reference", "dir", "out", "--base", "builtin:tiny-sam"]
    assert build_parser().parse_args([*argv, "--classes", "A, B"]).domains == ("A", "B")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("samcl: warning: --classes is renamed --domains")
    assert build_parser().parse_args(argv).domains == ("ISTD", "Kvasir", "ISIC", "cod", "camo", "COCO")


def test_a_tracked_object_s_score_is_its_presence_with_a_warning():
    from samcl.inference.video import TrackedObject

    tracked = TrackedObject(np.zeros((2, 2), bool), 0.75)
    with pytest.warns(DeprecationWarning, match="presence"):
        assert tracked.score == tracked.presence == 0.75


@pytest.mark.parametrize("module, old", [("samcl.store", "BASE_CLASS"), ("samcl.selector", "EmbeddingBuffer"),
                                         ("samcl.reference", "REFERENCE_CLASSES"), ("samcl.serve.model", "Job")])
def test_an_old_module_name_warns_at_the_callers_line_every_time_under_its_own_module(module, old):
    """Python shows a DeprecationWarning by default only where it points into the caller's code (`__main__`), so
    the warning must name the caller's line, not samcl's lazy loader, and come again on a second look-up."""
    import importlib
    import warnings

    package = importlib.import_module(module)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            getattr(package, old)
        assert [w.filename for w in caught] == [__file__]
        assert str(caught[0].message).startswith(f"{module}.{old} is renamed")
