// Word error rate: (substitutions + deletions + insertions) / reference words, by word-level Levenshtein
// distance (the NIST sclite definition). Case-insensitive; punctuation other than apostrophes ignored.
#pragma once

#include <algorithm>
#include <cctype>
#include <sstream>
#include <string>
#include <vector>

namespace sw::test {

inline std::vector<std::string> words(const std::string& text) {
  std::string clean;
  for (char c : text)
    clean.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '\''
                        ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                        : ' ');
  std::istringstream in(clean);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

inline std::size_t word_errors(const std::vector<std::string>& ref, const std::vector<std::string>& hyp) {
  std::vector<std::size_t> prev(hyp.size() + 1), cur(hyp.size() + 1);
  for (std::size_t j = 0; j <= hyp.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= ref.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= hyp.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref[i - 1] == hyp[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[hyp.size()];
}

inline double wer(const std::string& ref, const std::string& hyp) {
  auto r = words(ref);
  return r.empty() ? 0.0 : static_cast<double>(word_errors(r, words(hyp))) / static_cast<double>(r.size());
}

}  // namespace sw::test
