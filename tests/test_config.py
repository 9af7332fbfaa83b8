import pytest

from bmd.config import PROFILES, ProfileError, load_profile


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_load_and_keep_image_four_times_chest(name):
    profile = load_profile(name)
    assert profile.profile == name
    assert profile.twin_image_size >= 4 * profile.chest_size


def test_quick_profile_uses_the_papers_split():
    p = load_profile("quick")
    assert (p.twin_n_train, p.twin_n_val, p.twin_n_test) == (1087, 265, 329)


def test_overrides_win_and_none_is_ignored():
    assert load_profile("smoke", seed=7).seed == 7
    assert load_profile("smoke", seed=None).seed == 0


def test_unknown_profile_and_unknown_key_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\nchest_sise: 3\n")
    with pytest.raises(ProfileError, match="chest_sise"):
        load_profile(bad)
