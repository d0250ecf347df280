"""cyclelib.toy, the 2-D toy of chapter 2: the statistic reads mappings right, and adversarial-only
training measurably fails to keep the modes' content."""
import pytest
import torch

from cyclelib import toy


class Lookup(torch.nn.Module):
    """A 'generator' that sends each point to the centre of Y mode ``order[k]``, k its X mode."""

    def __init__(self, x_domain, y_domain, order):
        super().__init__()
        self.x_domain, self.targets = x_domain, y_domain.centres[torch.tensor(order)]

    def forward(self, x):
        return self.targets[self.x_domain.nearest_mode(x)]


@pytest.mark.parametrize("order,kept,hit,one_to_one", [
    ([0, 1, 2, 3], 1.0, 4, 1),   # faithful
    ([1, 0, 3, 2], 0.0, 4, 1),   # a permutation: modes apart, content swapped
    ([2, 2, 2, 2], 0.25, 1, 0),  # collapse onto one mode
    ([0, 0, 3, 3], 0.5, 2, 0),   # two modes each onto one
])
def test_mapping_summary_tells_faithful_permuted_and_collapsed(order, kept, hit, one_to_one):
    x_domain, y_domain = toy.domains(4)
    mapping = toy.mode_mapping(Lookup(x_domain, y_domain, order), x_domain, y_domain)
    assert torch.allclose(mapping.sum(dim=1), torch.ones(4))
    assert mapping.argmax(dim=1).tolist() == order
    assert toy.mapping_summary(mapping) == {"kept": pytest.approx(kept), "modes_hit": hit, "one_to_one": one_to_one}


def test_domains_do_not_overlap():
    """No Y mode sits where an X mode does: the identity map is no answer to the game."""
    x_domain, y_domain = toy.domains(4)
    assert torch.cdist(x_domain.centres, y_domain.centres).min() > 1.5
    points, modes = x_domain.sample(500, torch.Generator().manual_seed(0))
    assert points.shape == (500, 2) and torch.equal(x_domain.nearest_mode(points), modes)


@pytest.mark.slow
def test_adversarial_training_alone_loses_the_modes_content():
    """Chapter 2's claim on the toy, at the chapter's cpu size: the generator's outputs land on Y's
    modes (the adversarial loss did its job), but no seed keeps even half of the modes' content:
    they are collapsed together or permuted."""
    x_domain, y_domain = toy.domains(4)
    for seed in range(2):
        G = toy.train_adversarial(x_domain, y_domain, steps=1000, seed=seed)
        with torch.no_grad():
            x, _ = x_domain.sample(1000, torch.Generator().manual_seed(5))
            out = G(x)
        to_centre = torch.cdist(out, y_domain.centres).min(dim=1).values
        assert to_centre.median() < 0.5, "the outputs should sit on Y's modes"
        summary = toy.mapping_summary(toy.mode_mapping(G, x_domain, y_domain))
        assert summary["kept"] < 0.5, summary


def test_an_unknown_gan_mode_is_named():
    x_domain, y_domain = toy.domains(3)
    with pytest.raises(ValueError, match="valid values"):
        toy.train_adversarial(x_domain, y_domain, steps=1, mode="wasserstein")
