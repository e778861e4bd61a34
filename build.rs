//! Build script: make the binary load the libpython it was compiled against.
//!
//! pyo3 links `libpython3.x.so` found through the build interpreter, but at
//! run time the dynamic loader would otherwise pick whatever `ld.so.cache`
//! lists first (on a pyenv machine: Debian's libpython, a different patch
//! release with a different stdlib). A RUNPATH entry pointing at the build
//! interpreter's lib dir makes the pairing explicit. The interpreter's own
//! path is recorded too, so the worker can present it as `sys.executable`
//! and let CPython compute `sys.prefix` from it.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=PODMASTER_BUILD_PYTHON={exe}");
    } else {
        println!("cargo:rustc-env=PODMASTER_BUILD_PYTHON=");
    }
    let v = config.version();
    println!("cargo:rustc-env=PODMASTER_PY_VERSION={}.{}", v.major, v.minor);
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
