"""Where the agent finds kernel headers for BCC, in order: the user's BCC_KERNEL_SOURCE, the
node's matching /lib/modules/<release>/build, the node's Debian pair under /usr/src (merged),
the image's generic trees; and the error when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from netobserv_tui.agent import kernel
from netobserv_tui.agent.kernel import HeaderSearch
from netobserv_tui.model.errors import KernelError

RELEASE = "6.18.44-test"


def tree(path: Path, *files: str) -> Path:
    for name in ("include/linux/types.h", *files):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"/* {name} */\n")
    return path


def debian_pair(src: Path, version: str) -> None:
    tree(src / f"linux-headers-{version}-common", "include/linux/skbuff.h")
    generated = src / f"linux-headers-{version}-amd64" / "include" / "generated"
    generated.mkdir(parents=True)
    (generated / "autoconf.h").write_text("#define CONFIG_NET 1\n")


@pytest.fixture
def search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HeaderSearch:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(kernel, "_bcc_source_set", None)
    for name in ("modules", "src", "image", "cache"):
        (tmp_path / name).mkdir()
    return HeaderSearch(release=RELEASE, modules=tmp_path / "modules", src=tmp_path / "src",
                        image=tmp_path / "image", cache=tmp_path / "cache")


def test_nothing_found_says_where_it_looked_and_what_to_install(search: HeaderSearch) -> None:
    assert search.candidates() == []
    with pytest.raises(KernelError) as err:
        kernel.find_headers(search)
    text = str(err.value)
    for place in (f"{search.modules}/{RELEASE}/build", str(search.src), str(search.image)):
        assert place in text
    assert "apt-get install linux-headers-amd64" in text
    assert "need not match" in text


def test_order_is_node_matching_then_node_pair_then_image(search: HeaderSearch) -> None:
    tree(search.modules / RELEASE / "build")
    debian_pair(search.src, "6.1.0-55")
    debian_pair(search.src, "6.1.0-9")  # older: numbers compare as numbers, not text
    tree(search.image / "linux-headers-6.1.0-56-amd64")
    tree(search.image / "linux-headers-5.10.0-30-amd64")
    (search.image / "README").write_text("not a tree\n")
    found = search.candidates()
    assert [(h.origin, h.matching) for h in found] == [
        ("node", True), ("node", False), ("image", False), ("image", False)]
    assert found[0].path == search.modules / RELEASE / "build"
    assert found[1].detail == f"linux-headers-6.1.0-55-amd64 (+ -common) in {search.src}"
    assert found[2].path == search.image / "linux-headers-6.1.0-56-amd64"
    assert found[3].path == search.image / "linux-headers-5.10.0-30-amd64"
    assert kernel.find_headers(search) == found[0]


def test_the_node_pair_is_merged_into_one_tree(search: HeaderSearch) -> None:
    debian_pair(search.src, "6.1.0-55")
    (headers,) = search.candidates()
    assert headers.path == search.cache / "kheaders" / "linux-headers-6.1.0-55-amd64"
    assert headers.path is not None
    assert (headers.path / "include/linux/skbuff.h").resolve() == (
        search.src / "linux-headers-6.1.0-55-common/include/linux/skbuff.h")
    assert (headers.path / "include/generated/autoconf.h").resolve() == (
        search.src / "linux-headers-6.1.0-55-amd64/include/generated/autoconf.h")
    # Whole directories found in one package only are one link, not one per file.
    assert (headers.path / "include/linux").is_symlink()
    assert (headers.path / "include/generated").is_symlink()
    assert not (headers.path / "include").is_symlink()
    assert "not the running kernel's" in headers.describe()
    assert "struct layouts come from BTF" in headers.describe()


def test_a_pair_or_image_tree_named_for_the_running_kernel_is_matching(
    search: HeaderSearch,
) -> None:
    debian_pair(search.src, RELEASE.removesuffix("-test"))
    search = HeaderSearch(release=RELEASE.removesuffix("-test") + "-amd64",
                          modules=search.modules, src=search.src, image=search.image,
                          cache=search.cache)
    tree(search.image / f"linux-headers-{search.release}")
    assert [(h.origin, h.matching) for h in search.candidates()] == [
        ("node", True), ("image", True)]
    assert search.candidates()[0].describe().endswith("matches the running kernel")


def test_only_the_image_when_the_node_has_nothing(search: HeaderSearch) -> None:
    # What the agent pod sees on a node without headers: empty /lib/modules and /usr/src.
    (search.modules / RELEASE).mkdir()
    tree(search.image / "linux-headers-6.1.0-56-amd64")
    (headers,) = search.candidates()
    assert headers.origin == "image"
    assert headers.describe().startswith(
        f"image headers: linux-headers-6.1.0-56-amd64 in {search.image}; not the running")


def test_the_users_choice_wins_and_is_the_only_one(
    search: HeaderSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(search.modules / RELEASE / "build")
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/srv/headers")
    (headers,) = search.candidates()
    assert (headers.origin, headers.path, headers.matching) == ("user", Path("/srv/headers"), None)
    assert headers.describe() == "user headers: BCC_KERNEL_SOURCE=/srv/headers"


def test_prepare_sets_bccs_environment_and_is_not_mistaken_for_the_user(
    search: HeaderSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian_pair(search.src, "6.1.0-55")
    tree(search.image / "linux-headers-6.1.0-56-amd64")
    node, image = search.candidates()
    image.prepare()
    assert kernel.os.environ["BCC_KERNEL_SOURCE"] == str(image.path)
    # The variable we set ourselves is not an override: the search still ranks everything.
    assert search.candidates() == [node, image]
    node.prepare()
    assert kernel.os.environ["BCC_KERNEL_SOURCE"] == str(node.path)
    assert image.as_dict() == {"origin": "image", "path": str(image.path), "matching": False,
                               "detail": f"linux-headers-6.1.0-56-amd64 in {search.image}"}


def test_overlay_links_whole_directories_and_the_later_source_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    tree(first, "include/linux/a.h", "include/linux/both.h", "only-first/x.h", "Makefile")
    tree(second, "include/linux/both.h", "include/generated/g.h", "Makefile")
    (second / "include/linux/both.h").write_text("second\n")
    (second / "Makefile").write_text("second\n")
    (first / "clash").mkdir()
    (second / "clash").write_text("a file wins over a directory when it comes later\n")
    kernel._overlay([first, second], tmp_path / "merged")
    merged = tmp_path / "merged"
    assert (merged / "include/linux/a.h").read_text() == "/* include/linux/a.h */\n"
    assert (merged / "include/linux/both.h").read_text() == "second\n"
    assert (merged / "Makefile").read_text() == "second\n"
    assert (merged / "include/generated/g.h").exists()
    assert (merged / "only-first").is_symlink()
    assert (merged / "include/generated").is_symlink()
    assert (merged / "clash").is_file()
    links = [p for p in merged.rglob("*") if p.is_symlink()]
    assert len(links) == 7  # a.h, both.h, types.h, generated, only-first, Makefile, clash


def test_a_crashed_merge_with_our_pid_and_a_tree_merged_meanwhile_are_handled(
    search: HeaderSearch,
) -> None:
    debian_pair(search.src, "6.1.0-55")
    common = search.src / "linux-headers-6.1.0-55-common"
    arch = search.src / "linux-headers-6.1.0-55-amd64"
    dest = search.cache / "kheaders" / arch.name
    dest.parent.mkdir(parents=True)
    # A crashed agent's half-made tree under our PID (every agent is PID 1 in its pod).
    stale = dest.with_name(f"{dest.name}.tmp{kernel.os.getpid()}")
    (stale / "include").mkdir(parents=True)
    kernel._merge(common, arch, dest)
    assert (dest / "include/linux/skbuff.h").exists()
    assert not stale.exists()
    # Another agent finished the same tree while we merged: theirs is kept, ours dropped.
    kernel._merge(common, arch, dest)
    assert (dest / "include/generated/autoconf.h").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [arch.name]
