//! The uniffi bindgen CLI, built from the same uniffi version as the library so that the
//! metadata it reads from `libdynamokv_swift` always matches (see scripts/check.sh).

fn main() {
    uniffi::uniffi_bindgen_main()
}
