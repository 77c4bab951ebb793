"""The profile model: interning, validation and the pure transforms (merge, subtract, scale)."""

from __future__ import annotations

import pytest

from pyprof_http.model import (
    Frame,
    Profile,
    Sample,
    ValueType,
    by_function,
    frame,
    merge,
    scale,
    subtract,
)

COUNT = ValueType("goroutine", "count")
SAMPLES = ValueType("samples", "count")
CPU = ValueType("cpu", "nanoseconds")

A = frame("a", "/app/a.py", 1)
B = frame("b", "/app/b.py", 2)
C = frame("c", "/app/c.py", 3)


def _profile(*samples: Sample, time_ns: int = 0, duration_ns: int = 0,
             types: tuple[ValueType, ...] = (COUNT,), **kwargs) -> Profile:
    return Profile(sample_types=types, samples=samples, time_ns=time_ns,
                   duration_ns=duration_ns, **kwargs)


def _by_key(profile: Profile) -> dict:
    return {s.key(): s.values for s in profile.samples}


# --- frames ---------------------------------------------------------------------------------


def test_frame_interning_returns_the_same_object() -> None:
    first = frame("handler", "/srv/app.py", 10)
    again = frame("handler", "/srv/app.py", 10)
    assert first is again
    assert first == Frame("handler", "/srv/app.py", 10)


def test_frames_differing_in_any_field_are_distinct() -> None:
    base = frame("f", "/x.py", 1)
    assert frame("g", "/x.py", 1) is not base
    assert frame("f", "/y.py", 1) is not base
    assert frame("f", "/x.py", 2) is not base
    assert len({base, frame("g", "/x.py", 1), frame("f", "/y.py", 1), frame("f", "/x.py", 2)}) == 4


def test_frames_are_immutable() -> None:
    with pytest.raises(AttributeError):
        A.line = 5  # type: ignore[misc]


# --- Profile --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), (1,), (1, 2, 3)])
def test_profile_rejects_wrong_number_of_values(values: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"sample has {len(values)} values for 2 sample types"):
        Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), values),))


def test_profile_accepts_matching_values_and_no_samples() -> None:
    assert Profile(sample_types=(SAMPLES, CPU), samples=()).totals() == (0, 0)
    assert Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), (1, 2)),)).samples


def test_totals_sum_each_value_column() -> None:
    profile = Profile(
        sample_types=(SAMPLES, CPU),
        samples=(Sample((A,), (1, 10)), Sample((B, A), (2, 20)), Sample((C,), (-1, 5))),
    )
    assert profile.totals() == (2, 35)


def test_value_index_uses_default_sample_type() -> None:
    profile = Profile(sample_types=(SAMPLES, CPU), samples=(), default_sample_type="samples")
    assert profile.value_index() == 0
    assert profile.value_index("cpu") == 1
    assert profile.value_index("samples") == 0


def test_value_index_without_default_is_the_last_like_pprof() -> None:
    profile = Profile(sample_types=(SAMPLES, CPU), samples=())
    assert profile.value_index() == 1
    assert Profile(sample_types=(COUNT,), samples=()).value_index() == 0


def test_value_index_unknown_default_falls_back_to_last() -> None:
    profile = Profile(sample_types=(SAMPLES, CPU), samples=(), default_sample_type="nope")
    assert profile.value_index() == 1


def test_value_index_unknown_name_raises_key_error() -> None:
    profile = Profile(sample_types=(SAMPLES, CPU), samples=(), default_sample_type="cpu")
    with pytest.raises(KeyError, match="wall"):
        profile.value_index("wall")


def test_sample_key_ignores_label_order() -> None:
    one = Sample((A,), (1,), {"a": "1", "b": 2})
    two = Sample((A,), (5,), {"b": 2, "a": "1"})
    assert one.key() == two.key()
    assert one.key() != Sample((A,), (1,), {"a": "1"}).key()
    assert one.key() != Sample((B,), (1,), {"a": "1", "b": 2}).key()


def test_default_labels_are_empty() -> None:
    assert dict(Sample((A,), (1,)).labels) == {}


# --- merge ----------------------------------------------------------------------------------


def test_merge_sums_equal_stack_and_labels() -> None:
    p1 = _profile(Sample((A,), (2,), {"thread": "t"}), Sample((B,), (1,)), time_ns=100,
                  duration_ns=10)
    p2 = _profile(Sample((A,), (3,), {"thread": "t"}), time_ns=120, duration_ns=30)
    merged = merge([p1, p2])
    assert _by_key(merged) == {
        ((A,), (("thread", "t"),)): (5,),
        ((B,), ()): (1,),
    }
    assert merged.time_ns == 100
    assert merged.duration_ns == 50  # from the first start to the last end


def test_merge_keeps_different_labels_apart() -> None:
    p1 = _profile(Sample((A,), (2,), {"thread": "t1"}))
    p2 = _profile(Sample((A,), (3,), {"thread": "t2"}), Sample((A,), (4,)))
    merged = merge([p1, p2])
    assert sorted(s.values[0] for s in merged.samples) == [2, 3, 4]
    assert len(merged.samples) == 3


def test_merge_keeps_stacks_differing_only_by_order_apart() -> None:
    merged = merge([_profile(Sample((A, B), (1,))), _profile(Sample((B, A), (1,)))])
    assert len(merged.samples) == 2


def test_merge_multi_value() -> None:
    p1 = Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), (1, 10)),))
    p2 = Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), (2, 25)),))
    assert merge([p1, p2]).samples[0].values == (3, 35)


def test_merge_comments_deduplicated_in_order_and_default_from_first() -> None:
    p1 = _profile(comments=("x", "y"), default_sample_type="goroutine")
    p2 = _profile(comments=("y", "z"))
    merged = merge([p1, p2])
    assert merged.comments == ("x", "y", "z")
    assert merged.default_sample_type == "goroutine"


def test_merge_single_profile_is_identity_on_values() -> None:
    p = _profile(Sample((A,), (2,)), Sample((A,), (3,)))  # duplicates inside one profile add up
    assert [s.values for s in merge([p]).samples] == [(5,)]


def test_merge_does_not_mutate_inputs() -> None:
    p1 = _profile(Sample((A,), (2,)))
    p2 = _profile(Sample((A,), (3,)))
    merge([p1, p2])
    assert p1.samples[0].values == (2,)
    assert p2.samples[0].values == (3,)


def test_merge_incompatible_sample_types_raise() -> None:
    with pytest.raises(ValueError, match="incompatible sample types"):
        merge([_profile(), Profile(sample_types=(SAMPLES, CPU), samples=())])


def test_merge_nothing_raises() -> None:
    with pytest.raises(ValueError, match="no profiles"):
        merge([])


# --- subtract -------------------------------------------------------------------------------


def test_subtract_gives_negative_values_and_drops_zeros() -> None:
    before = _profile(
        Sample((A,), (3,)),  # shrinks
        Sample((B,), (2,)),  # unchanged: dropped
        Sample((C,), (1,)),  # gone: negative
        time_ns=1_000,
    )
    after = _profile(
        Sample((A,), (1,)),
        Sample((B,), (2,)),
        Sample((B, A), (4,)),  # new
        time_ns=5_000,
        duration_ns=7,
    )
    delta = subtract(after, before)
    assert _by_key(delta) == {
        ((A,), ()): (-2,),
        ((C,), ()): (-1,),
        ((B, A), ()): (4,),
    }
    assert delta.time_ns == 5_000
    assert delta.duration_ns == 4_000


def test_subtract_labels_are_part_of_the_identity() -> None:
    before = _profile(Sample((A,), (1,), {"task": "x"}))
    after = _profile(Sample((A,), (1,), {"task": "y"}))
    assert _by_key(subtract(after, before)) == {
        ((A,), (("task", "x"),)): (-1,),
        ((A,), (("task", "y"),)): (1,),
    }


def test_subtract_keeps_sample_when_any_value_is_nonzero() -> None:
    before = Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), (1, 10)),))
    after = Profile(sample_types=(SAMPLES, CPU), samples=(Sample((A,), (1, 15)),))
    assert [s.values for s in subtract(after, before).samples] == [(0, 5)]


def test_subtract_duration_never_negative() -> None:
    assert subtract(_profile(time_ns=10), _profile(time_ns=50)).duration_ns == 0


def test_subtract_self_is_empty() -> None:
    p = _profile(Sample((A,), (3,)), Sample((B,), (1,), {"k": 1}))
    assert subtract(p, p).samples == ()


def test_subtract_incompatible_sample_types_raise() -> None:
    with pytest.raises(ValueError, match="incompatible sample types"):
        subtract(_profile(), Profile(sample_types=(CPU,), samples=()))


# --- scale ----------------------------------------------------------------------------------


def test_scale_multiplies_and_rounds_to_int() -> None:
    p = Profile(sample_types=(SAMPLES, CPU),
                samples=(Sample((A,), (3, 10)), Sample((B,), (1, 7), {"t": "x"})))
    scaled = scale(p, 1.6)
    assert [s.values for s in scaled.samples] == [(5, 16), (2, 11)]  # 4.8, 16, 1.6, 11.2
    assert all(isinstance(v, int) for s in scaled.samples for v in s.values)
    assert dict(scaled.samples[1].labels) == {"t": "x"}
    assert scaled.samples[1].stack == (B,)
    assert p.samples[0].values == (3, 10)  # input untouched


def test_scale_down() -> None:
    p = _profile(Sample((A,), (10,)), Sample((B,), (-7,)))
    assert [s.values for s in scale(p, 0.3).samples] == [(3,), (-2,)]  # 3.0, -2.1


def test_by_function_merges_a_function_sampled_at_several_lines() -> None:
    """go tool pprof's default granularity: one frame per (function, file), at its lowest line."""
    route = [frame("sync_route", "/app/web.py", line) for line in (42, 40, 47)]
    other_file = frame("sync_route", "/app/other.py", 9)
    main = frame("main", "/app/main.py", 3)
    types = (ValueType("samples", "count"),)
    profile = Profile(types, (
        Sample((route[0], main), (2,)),
        Sample((route[1], main), (3,)),
        Sample((route[2], main), (5,), {"thread": "a"}),
        Sample((other_file, main), (1,)),
    ), comments=("kept",))
    widened = by_function(profile)
    at_def = frame("sync_route", "/app/web.py", 40)
    got = sorted((s.stack, s.values, sorted(s.labels.items())) for s in widened.samples)
    assert got == sorted([
        ((at_def, main), (5,), []),  # lines 42 and 40, same labels: one sample
        ((at_def, main), (5,), [("thread", "a")]),  # labels still keep samples apart
        ((other_file, main), (1,), []),  # same name, another file: another function
    ])
    assert widened.comments == ("kept",) and widened.sample_types == types
