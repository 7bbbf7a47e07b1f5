fn main() {
    // Link flags a Node addon needs (e.g. `-undefined dynamic_lookup` on macOS).
    napi_build::setup();
}
