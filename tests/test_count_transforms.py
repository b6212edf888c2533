"""Tests of ltc/transforms.py: the counting inputs' numpy/OpenCV core (no Caffe)."""
import cv2
import numpy as np
import pytest

from ltc import transforms

FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def smooth_images(n, size=256, seed=0):
    """n distinct HxWx3 uint8 images (smooth noise plus fine noise, channels differ)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = cv2.resize(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), (size, size),
                         interpolation=cv2.INTER_CUBIC)
        out.append(cv2.add(img, rng.integers(0, 64, (size, size, 3), dtype=np.uint8)))
    return out


def chw(img):
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def reference_input(img_hwc, gray, eps=1e-5):
    """Independent reference: gray = channel mean (float64), then (v - mean) / (std + eps); CHW float."""
    v = img_hwc.astype(np.float64)
    if gray:
        v = np.repeat(v.mean(axis=2, keepdims=True), 3, axis=2)
    v = (v - v.mean()) / (v.std() + eps)
    return v.transpose(2, 0, 1)


def reference_sample(images_hwc, plan, i, crop, eps=1e-5):
    """The six normalised inputs of sample i built from HWC images with cv2.resize on the HWC crop."""
    s = crop // 2
    method = FLAGS[transforms.INTERP_NAMES[plan.interp[i]]]

    def crop_of(img, u):
        y0, x0 = int(u[0] * (img.shape[0] - crop + 1)), int(u[1] * (img.shape[1] - crop + 1))
        return img[y0:y0 + crop, x0:x0 + crop]

    x = crop_of(images_hwc[plan.index[i]], plan.off_x[i])
    y = crop_of(images_hwc[plan.index[plan.partner[i]]], plan.off_y[i])
    raw = [x[:s, :s], x[:s, s:], x[s:, :s], x[s:, s:],
           cv2.resize(x, (s, s), interpolation=method), cv2.resize(y, (s, s), interpolation=method)]
    return [reference_input(r, bool(plan.gray[i]), eps) for r in raw]


@pytest.mark.parametrize("crop", [228, 224])
def test_tiles_reassemble_the_crop_in_tl_tr_bl_br_order(crop):
    img = chw(smooth_images(1)[0])
    c = transforms.crop_chw(img, 13, 27, crop)
    assert np.array_equal(c, img[:, 13:13 + crop, 27:27 + crop])
    t = transforms.tiles_chw(c)
    s = crop // 2
    assert all(ti.shape == (3, s, s) for ti in t)
    assert np.array_equal(np.block([[t[0], t[1]], [t[2], t[3]]]), c)
    # the order is TL, TR, BL, BR (not row/column swapped)
    assert np.array_equal(t[1], img[:, 13:13 + s, 27 + s:27 + crop])
    assert np.array_equal(t[2], img[:, 13 + s:13 + crop, 27:27 + s])


def test_crop_outside_the_image_is_refused():
    img = chw(smooth_images(1)[0])
    with pytest.raises(ValueError, match="does not fit"):
        transforms.crop_chw(img, 30, 0, 228)
    with pytest.raises(ValueError, match="smaller than"):
        transforms.crop_offset((0.5, 0.5), 200, 256, 228)


@pytest.mark.parametrize("name", transforms.INTERP_NAMES)
@pytest.mark.parametrize("crop", [228, 224])
def test_downsample_equals_cv2_resize_of_the_hwc_crop(name, crop):
    img = smooth_images(1, seed=3)[0]
    c = img[5:5 + crop, 20:20 + crop]
    want = cv2.resize(c, (crop // 2, crop // 2), interpolation=FLAGS[name])
    got = transforms.downsample_chw(chw(img)[:, 5:5 + crop, 20:20 + crop], crop // 2, transforms.INTERP_FLAGS[name])
    assert got.dtype == np.uint8
    assert np.array_equal(got, want.transpose(2, 0, 1))


def test_sample_views_before_normalisation():
    imgs = smooth_images(2, seed=4)
    u_x, u_y = (0.2, 0.9), (0.99, 0.0)
    views = transforms.sample_views(chw(imgs[0]), chw(imgs[1]), u_x, u_y, 228, cv2.INTER_CUBIC)
    y0, x0 = int(0.2 * 29), int(0.9 * 29)
    x = imgs[0][y0:y0 + 228, x0:x0 + 228]
    y = imgs[1][28:, :228]
    assert np.array_equal(views[0], chw(x[:114, :114]))
    assert np.array_equal(views[3], chw(x[114:, 114:]))
    assert np.array_equal(views[4], chw(cv2.resize(x, (114, 114), interpolation=cv2.INTER_CUBIC)))
    assert np.array_equal(views[5], chw(cv2.resize(y, (114, 114), interpolation=cv2.INTER_CUBIC)))


@pytest.mark.parametrize("gray", [False, True])
def test_normalize_into_matches_reference_and_has_zero_mean_unit_std(gray):
    imgs = smooth_images(2, seed=5)
    views = transforms.sample_views(chw(imgs[0]), chw(imgs[1]), (0.1, 0.3), (0.7, 0.6), 228, cv2.INTER_AREA)
    out = np.full((6, 3, 114, 114), np.nan, np.float32)
    transforms.normalize_into(views, gray, out)
    for k, v in enumerate(views):
        ref = reference_input(v.transpose(1, 2, 0), gray)
        np.testing.assert_allclose(out[k], ref, atol=1e-5)
        np.testing.assert_allclose(transforms.normalize(transforms.to_gray(v) if gray else v), ref, atol=1e-5)
        assert abs(float(out[k].mean())) < 1e-4
        assert abs(float(out[k].std()) - 1.0) < 1e-4
        assert np.array_equal(out[k, 0], out[k, 1]) == gray and np.array_equal(out[k, 0], out[k, 2]) == gray


def test_normalize_uniform_input_gives_zeros_not_nan():
    v = np.full((3, 114, 114), 77, np.uint8)
    out = np.empty((6, 3, 114, 114), np.float32)
    transforms.normalize_into([v] * 6, False, out)
    assert np.array_equal(out, np.zeros_like(out))


@pytest.mark.parametrize("interpolation", ["per_sample", "lanczos"])
@pytest.mark.parametrize("crop", [228, 224])
def test_fill_batch_matches_independent_reference(interpolation, crop):
    imgs = smooth_images(5, seed=6)
    n = 8
    plan = transforms.plan_batch(11, "train", 2, len(imgs), n, interpolation, gray_prob=0.5)
    assert plan.gray.any() and not plan.gray.all()
    out = np.empty(transforms.batch_shape(n, crop), np.float32)
    transforms.fill_batch([chw(imgs[j]) for j in plan.index], plan, crop, out)
    for i in range(n):
        for k, ref in enumerate(reference_sample(imgs, plan, i, crop)):
            np.testing.assert_allclose(out[k, i], ref, atol=1e-5, err_msg="sample %d input %s" % (i, transforms.INPUT_NAMES[k]))


def test_gray_is_all_six_or_none_and_fraction_is_gray_prob():
    imgs = smooth_images(6, seed=7)
    plan = transforms.plan_batch(5, "train", 0, len(imgs), 16, gray_prob=0.67)
    out = np.empty(transforms.batch_shape(16, 228), np.float32)
    transforms.fill_batch([chw(imgs[j]) for j in plan.index], plan, 228, out)
    for i in range(16):
        gray_inputs = [np.array_equal(out[k, i, 0], out[k, i, 1]) and np.array_equal(out[k, i, 0], out[k, i, 2])
                       for k in range(6)]
        assert gray_inputs == [bool(plan.gray[i])] * 6
    flags = np.concatenate([transforms.plan_batch(5, "train", b, 1000, 256).gray for b in range(40)])
    assert abs(flags.mean() - 0.67) < 0.03
    assert all(transforms.plan_batch(5, "train", b, 1000, 64, gray_prob=1.0).gray.all() for b in range(3))
    assert not any(transforms.plan_batch(5, "train", b, 1000, 64, gray_prob=0.0).gray.any() for b in range(3))


@pytest.mark.parametrize("n_db,batch", [(2, 2), (2, 3), (3, 7), (5, 8), (24, 32), (24, 256), (1000, 256)])
def test_y_never_comes_from_the_source_image_of_x(n_db, batch):
    for phase in transforms.PHASES:
        for b in range(20):
            plan = transforms.plan_batch(3, phase, b, n_db, batch)
            assert not np.any(plan.index[plan.partner] == plan.index)
            assert plan.partner.min() >= 0 and plan.partner.max() < batch


def test_derangement_is_a_permutation_when_one_exists():
    rng = np.random.default_rng(0)
    ids = np.arange(50)
    for _ in range(20):
        p = transforms.derangement(ids, rng)
        assert sorted(p) == list(range(50)) and not np.any(p == ids)
    ids = np.repeat(np.arange(4), 10)  # 40 members, 4 sources: no random permutation survives rejection
    p = transforms.derangement(ids, rng, tries=1)
    assert sorted(p) == list(range(40)) and not np.any(ids[p] == ids)
    with pytest.raises(ValueError, match="two different source images"):
        transforms.derangement(np.zeros(4, int), rng)


def test_train_sources_walk_a_permutation_per_epoch():
    n_db, n = 24, 10
    stream = np.concatenate([transforms.batch_sources(7, "train", b, n_db, n) for b in range(12)])  # 120 = 5 epochs
    for e in range(5):
        assert sorted(stream[e * n_db:(e + 1) * n_db]) == list(range(n_db))
    assert not np.array_equal(stream[:n_db], stream[n_db:2 * n_db])


def test_test_phase_walks_key_order_and_repeats():
    assert list(transforms.batch_sources(7, "test", 0, 10, 4)) == [0, 1, 2, 3]
    assert list(transforms.batch_sources(7, "test", 2, 10, 4)) == [8, 9, 0, 1]
    assert list(transforms.batch_sources(7, "test", 3, 10, 4)) == [0, 1, 2, 3]     # ceil(10 / 4) = 3 batches per pass
    assert list(transforms.batch_sources(7, "test", 1, 10, 4, test_batches=1)) == [0, 1, 2, 3]
    a, b = transforms.plan_batch(7, "test", 1, 10, 4), transforms.plan_batch(7, "test", 4, 10, 4)
    for f in transforms.BatchPlan._fields:
        assert np.array_equal(getattr(a, f), getattr(b, f))


def plans_equal(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in transforms.BatchPlan._fields)


def test_plans_depend_only_on_seed_phase_and_index():
    a = transforms.plan_batch(1, "train", 5, 100, 32)
    assert plans_equal(a, transforms.plan_batch(1, "train", 5, 100, 32, perm_cache={}))
    assert not plans_equal(a, transforms.plan_batch(2, "train", 5, 100, 32))
    assert not plans_equal(a, transforms.plan_batch(1, "train", 6, 100, 32))
    assert not plans_equal(a, transforms.plan_batch(1, "test", 5, 100, 32))


def test_interpolation_modes():
    per_batch = [transforms.plan_batch(1, "train", b, 100, 16).interp for b in range(30)]
    assert all(len(set(p)) == 1 for p in per_batch)
    assert set(int(p[0]) for p in per_batch) == {0, 1, 2, 3}
    per_sample = transforms.plan_batch(1, "train", 0, 100, 64, "per_sample").interp
    assert set(per_sample) == {0, 1, 2, 3}
    for name in transforms.INTERP_NAMES:
        assert set(transforms.plan_batch(1, "train", 0, 100, 8, name).interp) == {transforms.INTERP_NAMES.index(name)}
    # an unknown mode is refused by the data layer's setup (ltc/knobs.py; tests/test_knobs.py), not per batch here



def low_contrast(shape, seed, base=20):
    """uint8 array near ``base`` with a std of about 1.5 levels: the eps in (std + eps) and the
    std's ddof each change the result by far more than 1e-6, while mean / std stays about 10,
    so float32 arithmetic is good to a few 1e-6."""
    rng = np.random.RandomState(seed)
    return (base + rng.randint(-3, 4, shape) * (rng.rand(*shape) < 0.4)).astype(np.uint8)


def exact_reference(v_chw, gray, eps=1e-5, ddof=0):
    """(v - mean) / (std + eps) in float64, the std written out (population std: ddof 0)."""
    v = v_chw.astype(np.float64)
    if gray:
        v = np.repeat(v.mean(axis=0, keepdims=True), v.shape[0], axis=0)
    mean = v.sum() / v.size
    std = np.sqrt(((v - mean) ** 2).sum() / (v.size - ddof))
    return (v - mean) / (std + eps)


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("side", [8, 57])
def test_normalisation_equals_the_formula_at_1e6_where_ddof_and_eps_matter(gray, side):
    views = [low_contrast((3, side, side), seed) for seed in range(6)]
    out = np.full((6, 3, side, side), np.nan, np.float32)
    transforms.normalize_into(views, gray, out)
    for k, v in enumerate(views):
        ref = exact_reference(v, gray)
        # the inputs are crafted so that ddof=1 or eps=1e-3 would be off by more than 1e-5
        assert np.abs(exact_reference(v, gray, eps=1e-3) - ref).max() > 1e-5
        assert np.abs(exact_reference(v, gray, ddof=1) - ref).max() > 1e-5
        np.testing.assert_allclose(out[k], ref, rtol=1e-6, atol=3e-6)
        np.testing.assert_allclose(transforms.normalize(transforms.to_gray(v) if gray else v), ref, rtol=1e-6, atol=3e-6)
        g = np.repeat(v.astype(np.float64).mean(0, keepdims=True), 3, 0) if gray else v.astype(np.float64)
        assert transforms.input_std(v, gray) == pytest.approx(np.sqrt(((g - g.mean()) ** 2).mean()), rel=1e-9)


# ----------------------------------------------------------------------------- partner "same_source"
def test_grouped_derangement_pairs_within_groups_where_it_can():
    rng = np.random.default_rng(7)
    for _ in range(50):
        ids = rng.integers(0, 12, 32)                   # repeated source images, as in a small DB
        groups = (ids >= 9).astype(np.int64)            # a minority source
        if len(np.unique(ids[groups == 1])) < 2 or len(np.unique(ids[groups == 0])) < 2:
            continue
        p = transforms.grouped_derangement(ids, groups, rng)
        assert (ids[p] != ids).all() and (groups[p] == groups).all()
    ids = np.arange(8)
    groups = np.array([0] * 7 + [1])                     # a group of one: its member pairs across
    p = transforms.grouped_derangement(ids, groups, rng)
    assert (ids[p] != ids).all() and (groups[p[:7]] == 0).all() and groups[p[7]] == 0


def test_source_groups_read_mixdata_keys_and_default_to_one_source():
    keys = [b"00000000_scenes_00000000_scene_k06", b"00000001_photos_00000000_a.jpg", b"00000002_scenes_x"]
    assert list(transforms.source_groups(keys)) == [1, 0, 1]
    assert list(transforms.source_groups([b"00000000_img0.png", b"00000001_img1.png"])) == [0, 0]


def test_plan_batch_with_groups_is_seeded_and_the_default_is_unchanged():
    groups = np.array([0] * 90 + [1] * 10)
    a = transforms.plan_batch(4, "train", 3, 100, 32, groups=groups)
    b = transforms.plan_batch(4, "train", 3, 100, 32, groups=groups)
    assert np.array_equal(a.partner, b.partner) and np.array_equal(a.index, b.index)
    g = groups[a.index]
    for grp in (0, 1):
        if len(np.unique(a.index[g == grp])) >= 2:
            assert (groups[a.index[a.partner[g == grp]]] == grp).all()
    assert np.array_equal(transforms.plan_batch(4, "train", 3, 100, 32).partner,
                          transforms.plan_batch(4, "train", 3, 100, 32, groups=None).partner)
