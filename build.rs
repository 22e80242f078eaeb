//! Compiles `proto/onnx.proto` into Rust with prost-build, parsing it with
//! protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // Every `bytes` field as `Bytes`: a model decoded from a memory map, and
        // tensors whose payload lives in an external file, share the mapping
        // instead of copying it.
        .bytes(["."])
        .compile_fds(fds)?;
    Ok(())
}
