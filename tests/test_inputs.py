"""Listing the job's inputs from folders, S3 globs and manifests, with group keys."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.data.inputs import (
    DEFAULT_GROUP,
    GroupTemplate,
    InputError,
    InputRecord,
    list_images,
    read_manifest,
    write_manifest,
)


def make_tree(root):
    for rel in ["l1/capA/a.png", "l1/capA/b.PNG", "l1/capB/c.jpg", "l2/capA/d.png", "l2/capA/notes.txt"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_local_prefix_with_template(tmp_path):
    make_tree(tmp_path)
    records = list_images(str(tmp_path), group_template="{line}/{product}/{name}")
    assert [r.uri.rsplit("/", 1)[-1] for r in records] == ["a.png", "b.PNG", "c.jpg", "d.png"]
    assert [r.group for r in records] == ["l1/capA", "l1/capA", "l1/capB", "l2/capA"]
    assert all(r.label is None for r in records)


def test_local_glob_without_template_groups_by_parent_folder(tmp_path):
    make_tree(tmp_path)
    records = list_images(f"{tmp_path}/l1/**/*.png")
    assert [(r.uri.rsplit("/", 1)[-1], r.group) for r in records] == [("a.png", "capA")]
    flat = list_images(f"{tmp_path}/l1/capA/*")
    assert {r.group for r in flat} == {DEFAULT_GROUP}


def test_template_errors(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(InputError, match="does not match the group template"):
        list_images(str(tmp_path), group_template="{product}/{name}")
    with pytest.raises(InputError, match="including \\{name\\}"):
        GroupTemplate("{line}/{product}")
    assert GroupTemplate("cam-{camera}/{name}").group_of("cam-7/x.png") == "7"
    assert GroupTemplate("{product}/{_day}/{name}").group_of("capA/2026-11-22/x.png") == "capA"


def test_no_images_and_missing_location(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="not found"):
        list_images(str(tmp_path / "absent"))


def test_s3_glob_and_missing_bucket(s3_bucket):
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for rel in ["2026-11-22/l1/capA/a.png", "2026-11-22/l1/capB/b.png", "2026-11-22/readme.md"]:
        fs.pipe(f"{s3_bucket}/{rel}", b"x")
    records = list_images(f"s3://{s3_bucket}/2026-11-22/**/*.png", group_template="{line}/{product}/{name}")
    assert [r.uri for r in records] == [f"s3://{s3_bucket}/2026-11-22/l1/capA/a.png",
                                        f"s3://{s3_bucket}/2026-11-22/l1/capB/b.png"]
    assert [r.group for r in records] == ["l1/capA", "l1/capB"]
    assert len(list_images(f"s3://{s3_bucket}/2026-11-22")) == 2
    with pytest.raises(InputError, match="not found"):
        list_images("s3://no-such-bucket-abc/2026-11-22/*.png")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_manifest(tmp_path, fmt):
    table = pa.table({"uri": ["s3://b/y.png", "s3://b/x.png", "s3://b/z.png"], "group": ["g1", "g2", None],
                      "label": [1, 0, None], "mask_uri": ["s3://b/y_mask.png", None, None]})
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pa_csv
        pa_csv.write_csv(table, path)
    records = read_manifest(str(path))
    assert [r.uri for r in records] == ["s3://b/x.png", "s3://b/y.png", "s3://b/z.png"]
    assert [r.group for r in records] == ["g2", "g1", DEFAULT_GROUP]
    assert [r.label for r in records] == [0, 1, None]
    assert records[1].mask_uri == "s3://b/y_mask.png"


def test_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(str(tmp_path / "none.parquet"))
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": ["a.png"]}), bad)
    with pytest.raises(InputError, match="no 'uri' column"):
        read_manifest(str(bad))
    pq.write_table(pa.table({"uri": ["a.png"], "label": [2]}), bad)
    with pytest.raises(InputError, match="label must be 0, 1"):
        read_manifest(str(bad))
    pq.write_table(pa.table({"uri": ["a.png", "a.png"]}), bad)
    with pytest.raises(InputError, match="more than once"):
        read_manifest(str(bad))


def test_relative_entries_name_files_beside_the_manifest(tmp_path, monkeypatch, s3_bucket):
    """Issue 22 item 1: relative entries were read against the working directory, so under `ray job
    submit --working-dir` (a copy without demo_data/) every image of the demo manifest was missing."""
    night = tmp_path / "night"
    night.mkdir()
    (night / "manifest.csv").write_text("uri,mask_uri\nimages/a.png,masks/a.png\n./images/b.png,\n/abs/c.png,\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    records = read_manifest(str(night / "manifest.csv"))
    assert [r.uri for r in records] == ["/abs/c.png", f"{night}/images/a.png", f"{night}/images/b.png"]
    assert records[1].mask_uri == f"{night}/masks/a.png"
    monkeypatch.chdir(tmp_path)  # a relative manifest: its entries stay relative to where the program runs
    assert [r.uri for r in read_manifest("night/manifest.csv")][1:] == ["night/images/a.png", "night/images/b.png"]

    # written relative to the manifest's folder (or absolute outside it), so the folder can move
    write_manifest([InputRecord("night/images/a.png", "g", 1, "night/masks/a.png"), InputRecord("x.png", "g")],
                   "night/copy.csv")
    assert (night / "copy.csv").read_text().splitlines()[1:] == ['"images/a.png","g",1,"masks/a.png"',
                                                                 f'"{tmp_path}/x.png","g",,']
    assert [r.uri for r in read_manifest("night/copy.csv")] == [f"{tmp_path}/x.png", "night/images/a.png"]

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{s3_bucket}/night/manifest.csv", b"uri\nimages/a.png\ns3://other/b.png\n")
    assert [r.uri for r in read_manifest(f"s3://{s3_bucket}/night/manifest.csv")] == [
        "s3://other/b.png", f"s3://{s3_bucket}/night/images/a.png"]


def test_two_spellings_of_one_file_are_one_image(tmp_path):
    """img//a.png and img/./a.png are the same file: listing both would score it against itself."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri\n{tmp_path}/img//a.png\n{tmp_path}/img/./a.png\n{tmp_path}/img/b.png\n")
    with pytest.raises(InputError, match=f"1 image\\(s\\) more than once.*e.g. {tmp_path}/img//a.png and "
                                         f"{tmp_path}/img/./a.png; list each image once"):
        read_manifest(str(manifest))
    manifest.write_text(f"uri,mask_uri\nfile://{tmp_path}/img//a.png,{tmp_path}/masks/./a.png\n"
                        f"{tmp_path}/img/b.png,\n")
    records = read_manifest(str(manifest))
    assert [r.uri for r in records] == [f"{tmp_path}/img/a.png", f"{tmp_path}/img/b.png"]
    assert records[0].mask_uri == f"{tmp_path}/masks/a.png"
    remote = pa.table({"uri": ["s3://b/img//a.png", "s3://b/img/a.png"]})  # two distinct S3 keys
    pq.write_table(remote, tmp_path / "remote.parquet")
    assert [r.uri for r in read_manifest(str(tmp_path / "remote.parquet"))] == ["s3://b/img//a.png",
                                                                                "s3://b/img/a.png"]


def test_one_file_under_dot_dot_or_a_symbolic_link_is_refused(tmp_path, monkeypatch):
    """a/000.png and a/../a/000.png were scored against each other (0.05 against 0.38-0.40 for the rest),
    which hid that image's defect; a link to a listed file, or one folder listed twice, is the same file."""
    monkeypatch.chdir(tmp_path)  # the relative spelling names the same file wherever it is resolved from
    (tmp_path / "a").mkdir()
    for name in ("000.png", "001.png"):
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / "b").symlink_to(tmp_path / "a")  # b/.. is tmp_path, so b/../a is a again
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "a" / "001.png")
    manifest = tmp_path / "manifest.csv"
    for first, second in ((f"{tmp_path}/a/000.png", f"{tmp_path}/a/../a/000.png"),
                          (f"{tmp_path}/a/000.png", f"{tmp_path}/b/000.png"),
                          (f"{tmp_path}/a/001.png", f"{tmp_path}/a/link.png"),
                          ("a/000.png", f"{tmp_path}/a/000.png")):
        manifest.write_text(f"uri\n{first}\n{second}\n")
        with pytest.raises(InputError, match=f"lists 1 image\\(s\\) more than once.*e.g. {first} and {second};"):
            read_manifest(str(manifest))
    manifest.write_text(f"uri\n{tmp_path}/a/000.png\n{tmp_path}/b/../a/001.png\n")  # two files, one via ..
    assert len(read_manifest(str(manifest))) == 2
    from pipeline.data.inputs import refuse_duplicates

    listed = [r.uri for r in list_images(str(tmp_path / "a"))]  # 000, 001 and link.png
    with pytest.raises(InputError, match=f"inputs.uris lists 1 image.*e.g. {tmp_path}/a/001.png and {tmp_path}/a/link"):
        refuse_duplicates(listed, "inputs.uris")
    with pytest.raises(InputError, match="inputs.uris lists 4 image"):  # a and the link b to it: 3 more names
        refuse_duplicates(listed + [r.uri for r in list_images(str(tmp_path / "b"))], "inputs.uris")


def test_csv_manifest_columns_are_text_so_group_007_is_not_group_7(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri,group,label,mask_uri\na.png,007,1,m.png\nb.png,7,0,\nc.png,7.0, ,\n")
    records = read_manifest(str(manifest))
    assert [(r.group, r.label, r.mask_uri) for r in records] == [("007", 1, f"{tmp_path}/m.png"), ("7", 0, None),
                                                                 ("7.0", None, None)]


@pytest.mark.parametrize("name, content, words", [
    ("empty.csv", b"", "cannot be read as CSV: Empty CSV file"),
    ("header.csv", b"uri,group\n", "lists no images"),
    ("broken.parquet", b"PAR1 not really", "cannot be read as Parquet"),
])
def test_unreadable_manifests_are_one_line_input_errors(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=words) as info:
        read_manifest(str(tmp_path / name))
    assert "\n" not in str(info.value)
