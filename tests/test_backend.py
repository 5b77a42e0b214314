"""`import pinngs` works without the compiled module, falls back to the twins, warns once."""
import subprocess
import sys
import textwrap


def test_import_and_render_without_compiled_module():
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["pinngs._C"] = None          # make `from pinngs import _C` fail
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as w:
            import pinngs
            from pinngs.scenes import vessel_tree
            f = vessel_tree(60)
            views = pinngs.orbit(2, rows=16, cols=16, pixel_spacing_mm=(8.0, 8.0))
            img = pinngs.render_views(f, views)
            img2 = pinngs.render_views(f, views)
        msgs = [str(x.message) for x in w if "pinngs._C is not built" in str(x.message)]
        assert len(msgs) == 1, msgs
        assert "pip install --no-build-isolation" in msgs[0]
        assert img.shape == (2, 16, 16) and float(img.max()) > 0
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout
