// persist_throughput: sustained finals/s into each backend through the repository with batching (the
// persistence actor's write path), and the journal's cost per final (append + fdatasync per batch).
//
//   persist_throughput [--pg URL] [--rows N] [--batch B]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "storage/journal.hpp"
#include "storage/repository.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

sw::final_record row(int i) {
  sw::final_record f;
  f.transcript = {"bench-room-" + std::to_string(i % 20),
                  "k-u" + std::to_string(i),
                  "a final transcript of typical length, about twelve words long",
                  true,
                  "speaker-" + std::to_string(i % 20),
                  "Speaker",
                  "en",
                  i * 0.5,
                  i * 0.5 + 2};
  f.stream_started_ms = 1'790'000'000'000;
  return f;
}

void bench_db(const char* label, sw::repository& repo, int rows, int batch) {
  repo.migrate();
  auto t0 = clock_type::now();
  for (int i = 0; i < rows; i += batch) {
    std::vector<sw::final_record> b;
    for (int k = i; k < std::min(rows, i + batch); ++k) b.push_back(row(k));
    repo.write_batch(b);
  }
  double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("%s: %d finals in batches of %d: %.0f finals/s (%.2f ms per batch)\n", label, rows, batch, rows / s,
              s * 1000.0 / ((rows + batch - 1) / batch));
}

}  // namespace

int main(int argc, char** argv) {
  std::string pg;
  int rows = 20000, batch = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--pg")) pg = argv[i + 1];
    if (!std::strcmp(argv[i], "--rows")) rows = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
  }
  auto dir = std::filesystem::temp_directory_path() / "sw-bench-persist";
  std::filesystem::remove_all(dir);
  {
    auto repo = sw::repository::open("", (dir / "bench.db").string());
    bench_db("sqlite", *repo, rows, batch);
  }
  if (!pg.empty()) {
    auto repo = sw::repository::open(pg);
    bench_db("postgresql", *repo, rows, batch);
  } else {
    std::printf("postgresql: skipped (no --pg URL)\n");
  }
  {
    sw::journal j((dir / "journal").string());
    auto t0 = clock_type::now();
    std::vector<std::uint64_t> seqs;
    for (int i = 0; i < rows; ++i) {
      seqs.push_back(j.append(row(i)));
      if (seqs.size() == static_cast<std::size_t>(batch)) {
        j.sync();
        j.retire(seqs);
        seqs.clear();
      }
    }
    j.sync();
    double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    std::printf("journal: %d finals appended, fdatasync + retire per %d: %.2f us per final\n", rows, batch,
                s * 1e6 / rows);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
