// Writes the runner's part of an edgekit trace (device_agents/TRACE.md): one JSON object per line.
//
// Lines are buffered and flushed at the end of every repetition and on errors, so no write syscall
// lands inside a timed phase. Timestamps are taken by the caller; this class never reads a clock
// except in clock_sync(), which pairs CLOCK_MONOTONIC with CLOCK_BOOTTIME.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace edgekit {

// Nanoseconds of CLOCK_MONOTONIC (std::chrono::steady_clock is CLOCK_MONOTONIC on Linux and Android).
int64_t monotonic_ns();

// JSON string literal (quoted, escaped) for arbitrary bytes; non-ASCII bytes become '?'.
std::string json_string(const std::string& text);

class TraceWriter {
 public:
  // Takes ownership of `out` unless it is stdout.
  explicit TraceWriter(std::FILE* out);
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // {"type":"event","name":...,"ts_ns":...,"run":...,"warmup":...<extra>}; `extra` is either empty
  // or starts with a comma (already formatted JSON members).
  void event(const char* name, int64_t ts_ns, int run, bool warmup, const std::string& extra = "");
  void error(int64_t ts_ns, int run, bool warmup, const char* reason, const std::string& message);
  // A clock_sync event: CLOCK_MONOTONIC and CLOCK_BOOTTIME read back to back (midpoint of two
  // monotonic reads around the boot-time read).
  void clock_sync();
  // Any other complete line (runner_info, tokens, runner_footer).
  void line(const std::string& json_object);
  void flush();

 private:
  std::FILE* out_;
  std::string buffer_;
};

}  // namespace edgekit
