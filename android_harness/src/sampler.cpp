// edgekit_sampler: the phone agent's sampler in native code. device_agents/android/agent.sh starts it
// beside the runner and it writes one sample line (device_agents/TRACE.md) every --sample-ms until the
// process --pid is gone or it is sent SIGTERM.
//
// Why native: the agent's shell loop spends 0.3-0.4 ms of CPU a tick (a shell interprets every read), and
// on a device whose cores all run the runner's threads that time is taken from them, where a runtime's
// threads meet at a barrier after every operator and a preempted one holds the others. This program does
// the same reads in a few tens of microseconds and stamps CLOCK_MONOTONIC, the runner's own clock.
//
// What it reads is what the shell decided once (which cpufreq files, which thermal zones and their labels,
// the battery gauge and the sign of its current), passed as flags, so the sysfs probing stays in one
// place. Every number is read as the agent's `num` reads it: the first line, trimmed, an optional minus and
// digits, else null; a kernel or vendor may fill a file with anything.
//
// usage: edgekit_sampler --pid PID --out FILE --sample-ms S [--pss-ms 100] [--freq PATH]...
//                        [--thermal LABEL=PATH]... [--voltage PATH --current PATH --current-sign 1|-1]
//        edgekit_sampler --version
// Exit status: 0 when the process is gone or on SIGTERM; 2 bad usage; 1 the output cannot be written.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "proc_fields.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_term(int) { g_stop = 1; }

// Below this resident size smaps_rollup is cheap (well under 0.1 ms): read every tick, as the agent does.
constexpr long kPssCheapKb = 32768;
// A PSS read may cost at most 1/200 of the time until the next one (0.5% of a core).
constexpr int64_t kPssBudget = 200;

int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// A /proc or sysfs file kept open: each read is one pread at offset 0, which makes the kernel produce the
// text afresh (seq_file and sysfs attributes both do), where open + read + read + close cost four calls.
class Source {
 public:
  explicit Source(std::string path) : path_(std::move(path)) {}
  ~Source() {
    if (fd_ >= 0) close(fd_);
  }
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;
  Source(Source&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

  // The file's text (up to 16 KB) into `out`; false when it cannot be opened or read (tried again next time).
  bool read_into(std::string* out) {
    if (fd_ < 0) fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return false;
    char buf[16384];
    const ssize_t n = pread(fd_, buf, sizeof(buf), 0);
    if (n < 0) {
      close(fd_);
      fd_ = -1;
      return false;
    }
    out->assign(buf, static_cast<size_t>(n));
    return true;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// `text` as a JSON integer if it is one (optional minus, 1-18 digits, spaces around), else "null".
std::string json_int(const std::string& text, size_t begin = 0, size_t end = std::string::npos) {
  end = std::min(end, text.size());
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  bool negative = begin < end && text[begin] == '-';
  if (negative) ++begin;
  if (begin == end || end - begin > 18) return "null";
  long long value = 0;
  for (size_t i = begin; i < end; ++i) {
    if (text[i] < '0' || text[i] > '9') return "null";
    value = value * 10 + (text[i] - '0');
  }
  return std::to_string(negative ? -value : value);
}

// The first line of a sysfs file as a JSON integer, or "null".
std::string first_line_int(Source& source, std::string* scratch) {
  if (!source.read_into(scratch)) return "null";
  return json_int(*scratch, 0, scratch->find('\n'));
}

struct Options {
  long pid = 0;
  std::string out;
  long sample_ms = 0;
  long pss_ms = 100;
  std::vector<std::string> freq;
  std::vector<std::pair<std::string, std::string>> thermal;  // label, path
  std::string voltage, current;
  int current_sign = -1;
};

bool parse_long(const char* text, long* value) {
  char* end = nullptr;
  errno = 0;
  *value = std::strtol(text, &end, 10);
  return errno == 0 && end != text && *end == '\0';
}

// A thermal label goes into the JSON as a key, unquoted by the agent: a plain word only.
bool plain_word(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == ':' || c == '-'))
      return false;
  return true;
}

// An empty string when the flags are usable, else what is wrong with them.
std::string parse_args(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; i += 2) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return "option " + arg + " needs a value";
    const char* value = argv[i + 1];
    long n = 0;
    if (arg == "--pid" || arg == "--sample-ms" || arg == "--pss-ms" || arg == "--current-sign") {
      if (!parse_long(value, &n)) return arg + " must be an integer, got '" + value + "'";
      if (arg == "--pid") opt->pid = n;
      if (arg == "--sample-ms") opt->sample_ms = n;
      if (arg == "--pss-ms") opt->pss_ms = n;
      if (arg == "--current-sign") {
        if (n != 1 && n != -1) return std::string("--current-sign must be 1 or -1, got '") + value + "'";
        opt->current_sign = static_cast<int>(n);
      }
    } else if (arg == "--out") {
      opt->out = value;
    } else if (arg == "--freq") {
      opt->freq.emplace_back(value);
    } else if (arg == "--thermal") {
      const std::string word = value;
      const size_t eq = word.find('=');
      if (eq == std::string::npos || !plain_word(word.substr(0, eq)) || eq + 1 == word.size())
        return "--thermal must be LABEL=PATH with a plain-word label, got '" + word + "'";
      opt->thermal.emplace_back(word.substr(0, eq), word.substr(eq + 1));
    } else if (arg == "--voltage") {
      opt->voltage = value;
    } else if (arg == "--current") {
      opt->current = value;
    } else {
      return "unknown option '" + arg + "'";
    }
  }
  if (opt->pid <= 0) return "--pid is required (a process id)";
  if (opt->out.empty()) return "--out is required";
  if (opt->sample_ms < 10 || opt->sample_ms > 100) return "--sample-ms must be 10..100";
  if (opt->pss_ms < 0) return "--pss-ms must be >= 0";
  if (opt->voltage.empty() != opt->current.empty()) return "--voltage and --current go together";
  return "";
}

class Sampler {
 public:
  explicit Sampler(const Options& opt)
      : opt_(opt),
        statm_("/proc/" + std::to_string(opt.pid) + "/statm"),
        status_("/proc/" + std::to_string(opt.pid) + "/status"),
        smaps_rollup_("/proc/" + std::to_string(opt.pid) + "/smaps_rollup"),
        voltage_(opt.voltage),
        current_(opt.current),
        page_kb_(sysconf(_SC_PAGESIZE) / 1024) {
    for (const std::string& path : opt.freq) freq_.emplace_back(path);
    for (const auto& zone : opt.thermal) thermal_.emplace_back(zone.second);
  }

  // One sample line into `line`; false once the process is gone (no statm, or a zombie's empty one).
  bool sample(std::string* line) {
    if (!statm_.read_into(&text_)) return false;
    const size_t sp = text_.find(' ');
    const long size = std::strtol(text_.c_str(), nullptr, 10);
    const long resident = sp == std::string::npos ? -1 : std::strtol(text_.c_str() + sp + 1, nullptr, 10);
    if (size <= 0 || resident < 0) return false;
    const int64_t ts = clock_ns(CLOCK_MONOTONIC);
    const long rss = resident * page_kb_;
    long hwm = -1, pss = -1;
    if (rss < kPssCheapKb || ts >= next_pss_ns_) {
      if (status_.read_into(&text_)) hwm = edgekit::field_kb(text_, "VmHWM:");
      const int64_t cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
      if (smaps_rollup_.read_into(&text_)) pss = edgekit::field_kb(text_, "Pss:");
      const int64_t cost = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
      next_pss_ns_ = ts + std::max<int64_t>(opt_.pss_ms * 1000000LL, kPssBudget * cost);
    }
    line->assign("{\"type\":\"sample\",\"ts_ns\":");
    *line += std::to_string(ts) + ",\"rss_kb\":" + edgekit::kb_json(rss) + ",\"hwm_kb\":" + edgekit::kb_json(hwm) +
             ",\"pss_kb\":" + edgekit::kb_json(pss);
    *line += ",\"cpu_freq_khz\":[";
    for (size_t i = 0; i < freq_.size(); ++i) *line += (i ? "," : "") + first_line_int(freq_[i], &text_);
    *line += "],\"thermal_mc\":{";
    for (size_t i = 0; i < thermal_.size(); ++i)
      *line += (i ? ",\"" : "\"") + opt_.thermal[i].first + "\":" + first_line_int(thermal_[i], &text_);
    std::string power = "null", volt = "null", cur = "null";
    if (!opt_.voltage.empty()) {
      volt = first_line_int(voltage_, &text_);
      cur = first_line_int(current_, &text_);
      const long long mv = volt == "null" ? -1 : std::atoll(volt.c_str()) / 1000;
      const long long ua = cur == "null" ? 0 : std::atoll(cur.c_str());
      // mV x uA / 1000 = uW, as the agent's shell computes it; no product of sysfs garbage overflows
      if (volt != "null" && cur != "null" && mv >= 0 && mv < 1000000000LL && ua > -1000000000000LL &&
          ua < 1000000000000LL)
        power = std::to_string(mv * ua * opt_.current_sign / 1000);
    }
    *line += "},\"power_uw\":" + power + ",\"energy_uj\":null,\"voltage_uv\":" + volt + ",\"current_ua\":" + cur + "}\n";
    return true;
  }

 private:
  const Options& opt_;
  Source statm_, status_, smaps_rollup_, voltage_, current_;
  std::vector<Source> freq_, thermal_;
  const long page_kb_;
  int64_t next_pss_ns_ = 0;
  std::string text_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("edgekit_sampler %s\n", EDGEKIT_RUNNER_VERSION);
    return 0;
  }
  Options opt;
  if (const std::string problem = parse_args(argc, argv, &opt); !problem.empty()) {
    std::fprintf(stderr, "edgekit_sampler: %s\n", problem.c_str());
    return 2;
  }
  const int out = open(opt.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    std::fprintf(stderr, "edgekit_sampler: cannot write %s: %s\n", opt.out.c_str(), std::strerror(errno));
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  Sampler sampler(opt);
  std::string line;
  const int64_t period = opt.sample_ms * 1000000LL;
  int64_t next = clock_ns(CLOCK_MONOTONIC);
  while (!g_stop && sampler.sample(&line)) {
    // One write per line: a reader never sees half a sample, whenever this process stops.
    if (write(out, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      std::fprintf(stderr, "edgekit_sampler: cannot write %s: %s\n", opt.out.c_str(), std::strerror(errno));
      close(out);
      return 1;
    }
    next += period;
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    if (next <= now) next = now + period - (now - next) % period;  // behind: the next tick on the grid
    const timespec at{static_cast<time_t>(next / 1000000000LL), static_cast<long>(next % 1000000000LL)};
    while (!g_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == EINTR) {
    }
  }
  close(out);
  return 0;
}
