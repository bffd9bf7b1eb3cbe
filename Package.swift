// swift-tools-version: 6.0
import PackageDescription

/// mla-convert: turns MHA/GQA attention with RoPE into Multi-head Latent Attention.
///
/// Modules by concern (see docs/architecture.md):
/// - `MLATensor`: dtypes, shapes, mapped/owned storage, F16/BF16 conversion.
/// - `MLALinalg`: BLAS GEMM and LAPACK factorizations (the only module importing `CLAPACK`).
/// - `MLACheckpoint`: safetensors, GGUF, HDF5, HF config, model adapters (the only module importing `CHDF5`),
///   output plans (docs/output-safety.md) on top of `COutputCleanup` (signal-safe removal of unfinished outputs).
/// - `MLARuntime`: tokenizer, decoder forward pass, perplexity, calibration statistics.
/// - `mla-convert`, `mla-verify`: thin command-line front ends.
let package = Package(
    name: "mla-convert",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mla-convert", targets: ["mla-convert"]),
        .executable(name: "mla-verify", targets: ["mla-verify"]),
        .executable(name: "mla-bench", targets: ["mla-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLAPACK", path: "Sources/CLAPACK", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev", "zlib1g-dev"])]),
        .target(name: "CF16", path: "Sources/CF16"),
        .target(name: "COutputCleanup", path: "Sources/COutputCleanup"),
        .target(
            name: "CKernels", path: "Sources/CKernels",
            linkerSettings: [.linkedLibrary("mvec", .when(platforms: [.linux])), .linkedLibrary("m")]),
        .target(
            name: "MLATensor", dependencies: ["CF16", "COutputCleanup"],
            linkerSettings: [.linkedLibrary("m")]),
        .target(name: "MLALinalg", dependencies: ["MLATensor", "CLAPACK"]),
        .target(name: "MLACheckpoint", dependencies: ["MLATensor", "CHDF5", "COutputCleanup"]),
        .target(name: "MLARuntime", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "CKernels"]),
        .target(name: "MLAVerify", dependencies: ["MLACheckpoint", "MLARuntime"]),
        .target(name: "MLAConvert", dependencies: ["MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime"]),
        .target(
            name: "MLACLI",
            dependencies: ["MLALinalg", "MLACheckpoint", "CKernels", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "mla-convert",
            dependencies: [
                "MLACLI", "MLAConvert", "MLAVerify", "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mla-verify",
            dependencies: [
                "MLACLI", "MLAVerify", "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mla-bench",
            dependencies: [
                "MLACLI", "MLAConvert", "MLATensor", "MLALinalg", "MLACheckpoint", "MLARuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(name: "MLATestSupport", dependencies: ["MLACheckpoint", "MLALinalg"], path: "Tests/MLATestSupport"),
        .testTarget(name: "CLITests", dependencies: ["MLACLI", "MLACheckpoint", "MLARuntime", "MLAConvert", "MLALinalg", "MLATensor", "MLATestSupport"]),
        .testTarget(name: "MLAVerifyTests", dependencies: ["MLAVerify", "MLACheckpoint", "MLATestSupport"]),
        .testTarget(name: "MLATensorTests", dependencies: ["MLATensor"]),
        .testTarget(name: "MLALinalgTests", dependencies: ["MLALinalg", "MLATensor", "MLACheckpoint", "MLATestSupport"]),
        .testTarget(name: "MLACheckpointTests", dependencies: ["MLACheckpoint", "MLATensor", "MLATestSupport"]),
        .testTarget(
            name: "MLARuntimeTests", dependencies: ["MLARuntime", "MLAConvert", "MLAVerify", "MLACheckpoint", "MLALinalg", "MLATensor", "MLATestSupport"]),
    ]
)
