#include "trace_writer.h"

#include <time.h>

#include <chrono>

namespace edgekit {

int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static int64_t boottime_ns() {
  struct timespec ts {};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else if (c >= 0x80) {
          out += '?';  // keeps the trace valid UTF-8 whatever a library message contains
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

TraceWriter::TraceWriter(std::FILE* out) : out_(out) { buffer_.reserve(1 << 16); }

TraceWriter::~TraceWriter() {
  flush();
  if (out_ != stdout) std::fclose(out_);
}

void TraceWriter::event(const char* name, int64_t ts_ns, int run, bool warmup, const std::string& extra) {
  char head[160];
  std::snprintf(head, sizeof head, "{\"type\":\"event\",\"name\":\"%s\",\"ts_ns\":%lld,\"run\":%d,\"warmup\":%s",
                name, static_cast<long long>(ts_ns), run, warmup ? "true" : "false");
  buffer_ += head;
  buffer_ += extra;
  buffer_ += "}\n";
}

void TraceWriter::error(int64_t ts_ns, int run, bool warmup, const char* reason, const std::string& message) {
  event("error", ts_ns, run, warmup,
        std::string(",\"reason\":\"") + reason + "\",\"message\":" + json_string(message) + ",\"stderr_tail\":\"\"");
  flush();
}

void TraceWriter::clock_sync() {
  const int64_t before = monotonic_ns();
  const int64_t boot = boottime_ns();
  const int64_t after = monotonic_ns();
  event("clock_sync", before + (after - before) / 2, -1, false,
        ",\"ts_boot_ns\":" + std::to_string(boot));
}

void TraceWriter::line(const std::string& json_object) {
  buffer_ += json_object;
  buffer_ += '\n';
}

void TraceWriter::flush() {
  if (!buffer_.empty()) {
    std::fwrite(buffer_.data(), 1, buffer_.size(), out_);
    buffer_.clear();
  }
  std::fflush(out_);
}

}  // namespace edgekit
