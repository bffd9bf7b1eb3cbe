import ArgumentParser
import Foundation

/// Token ids from a comma-separated `--ids` list, each checked against the vocabulary.
func parseTokenIds(_ list: String, vocabSize: Int) throws -> [Int] {
    try list.split(separator: ",").map { piece -> Int in
        guard let v = Int(piece.trimmingCharacters(in: .whitespacesAndNewlines)), v >= 0, v < vocabSize else {
            throw ValidationError("--ids: '\(piece)' is not a token id below \(vocabSize)")
        }
        return v
    }
}
