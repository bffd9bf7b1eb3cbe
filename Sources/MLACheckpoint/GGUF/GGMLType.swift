import MLATensor

/// ggml tensor element types as stored in GGUF tensor infos. Raw values are the ggml type ids
/// (`gguf-py/gguf/constants.py`, `GGMLQuantizationType`); the block table is `GGML_QUANT_SIZES`.
///
/// Quantized types store blocks of `blockElements` consecutive values of a row (along ggml `ne[0]`) in
/// `blockBytes` bytes; plain types have blocks of one element.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3
    case q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20, iq3_S = 21, iq2_S = 22, iq4_XS = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_M = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

    /// The ggml name, such as `Q4_1` or `BF16`.
    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        case .iq2_XXS: return "IQ2_XXS"
        case .iq2_XS: return "IQ2_XS"
        case .iq3_XXS: return "IQ3_XXS"
        case .iq1_S: return "IQ1_S"
        case .iq4_NL: return "IQ4_NL"
        case .iq3_S: return "IQ3_S"
        case .iq2_S: return "IQ2_S"
        case .iq4_XS: return "IQ4_XS"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .f64: return "F64"
        case .iq1_M: return "IQ1_M"
        case .bf16: return "BF16"
        case .tq1_0: return "TQ1_0"
        case .tq2_0: return "TQ2_0"
        case .mxfp4: return "MXFP4"
        }
    }

    /// (elements per block, bytes per block), from gguf-py `GGML_QUANT_SIZES`.
    public var blockLayout: (elements: Int, bytes: Int) {
        switch self {
        case .f32: return (1, 4)
        case .f16, .bf16: return (1, 2)
        case .q4_0: return (32, 18)
        case .q4_1: return (32, 20)
        case .q5_0: return (32, 22)
        case .q5_1: return (32, 24)
        case .q8_0: return (32, 34)
        case .q8_1: return (32, 36)
        case .q2_K: return (256, 84)
        case .q3_K: return (256, 110)
        case .q4_K: return (256, 144)
        case .q5_K: return (256, 176)
        case .q6_K: return (256, 210)
        case .q8_K: return (256, 292)
        case .iq2_XXS: return (256, 66)
        case .iq2_XS: return (256, 74)
        case .iq3_XXS: return (256, 98)
        case .iq1_S: return (256, 50)
        case .iq4_NL: return (32, 18)
        case .iq3_S: return (256, 110)
        case .iq2_S: return (256, 82)
        case .iq4_XS: return (256, 136)
        case .i8: return (1, 1)
        case .i16: return (1, 2)
        case .i32: return (1, 4)
        case .i64: return (1, 8)
        case .f64: return (1, 8)
        case .iq1_M: return (256, 56)
        case .tq1_0: return (256, 54)
        case .tq2_0: return (256, 66)
        case .mxfp4: return (32, 17)
        }
    }

    /// The dtype `GGUFTensorStore.tensor(_:)` returns for this type: F32/F16/BF16 keep their bytes,
    /// F64 and the supported quantized types decode to F32. Nil when this toolkit cannot decode it.
    public var decodedDType: DTypeChoice? {
        switch self {
        case .f32: return .asStored(.f32)
        case .f16: return .asStored(.f16)
        case .bf16: return .asStored(.bf16)
        case .f64: return .asStored(.f64)
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q6_K: return .dequantizedF32
        default: return nil
        }
    }

    /// How a supported type is returned.
    public enum DTypeChoice: Sendable, Equatable {
        /// Bytes returned unchanged with this dtype.
        case asStored(DType)
        /// Blocks decoded to F32.
        case dequantizedF32

        public var dtype: DType {
            switch self {
            case let .asStored(d): return d
            case .dequantizedF32: return .f32
            }
        }
    }

    /// Bytes of one row of `elements` values; nil when `elements` is not a whole number of blocks or
    /// the size overflows.
    public func rowBytes(elements: Int) -> Int? {
        let (n, b) = blockLayout
        guard elements >= 0, elements % n == 0 else { return nil }
        let (bytes, overflow) = (elements / n).multipliedReportingOverflow(by: b)
        return overflow ? nil : bytes
    }
}
