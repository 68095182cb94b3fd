#include "pte_contents.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace edgekit {
namespace {

// Field indices in program.fbs (a field's vtable slot is its declaration order).
constexpr int kProgramExecutionPlan = 1;
constexpr int kPlanName = 0;
constexpr int kPlanOperators = 6;
constexpr int kPlanDelegates = 7;
constexpr int kOperatorName = 0;
constexpr int kOperatorOverload = 1;
constexpr int kDelegateId = 0;

// A bounds-checked view of a flatbuffer: every read that would leave [data, data + size) fails.
class Flatbuffer {
 public:
  Flatbuffer(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool u32(size_t at, uint32_t* out) const {
    if (at > size_ || size_ - at < 4) return false;
    std::memcpy(out, data_ + at, 4);
    return true;
  }
  bool u16(size_t at, uint16_t* out) const {
    if (at > size_ || size_ - at < 2) return false;
    std::memcpy(out, data_ + at, 2);
    return true;
  }
  // Position of field `index` of the table at `table`; 0 when absent or unreadable.
  size_t field(size_t table, int index) const {
    uint32_t soffset = 0;
    if (!u32(table, &soffset)) return 0;
    const int64_t vtable = static_cast<int64_t>(table) - static_cast<int32_t>(soffset);
    uint16_t vsize = 0;
    if (vtable < 0 || !u16(static_cast<size_t>(vtable), &vsize)) return 0;
    const size_t slot = 4 + 2 * static_cast<size_t>(index);
    if (slot + 2 > vsize) return 0;
    uint16_t offset = 0;
    if (!u16(static_cast<size_t>(vtable) + slot, &offset) || offset == 0) return 0;
    return table + offset;
  }
  // Follows the uoffset stored at `at`; 0 when unreadable.
  size_t deref(size_t at) const {
    uint32_t offset = 0;
    if (at == 0 || !u32(at, &offset) || offset == 0 || at + offset >= size_) return 0;
    return at + offset;
  }
  // The vector a field points to: position of its first element and its length.
  bool vector(size_t table, int index, size_t* first, uint32_t* length) const {
    const size_t at = deref(field(table, index));
    if (at == 0 || !u32(at, length) || (size_ - at - 4) / 4 < *length) return false;
    *first = at + 4;
    return true;
  }
  std::string string(size_t table, int index) const {
    const size_t at = deref(field(table, index));
    uint32_t length = 0;
    if (at == 0 || !u32(at, &length) || size_ - at - 4 < length) return "";
    return std::string(reinterpret_cast<const char*>(data_ + at + 4), length);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace

bool read_pte_contents(const std::string& path, const std::string& method, PteContents* out, std::string* problem) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *problem = "cannot open";
    return false;
  }
  struct stat st {};
  void* map = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size >= 8)
    map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    *problem = "cannot map the file";
    return false;
  }
  const auto* bytes = static_cast<const uint8_t*>(map);
  // Only the flatbuffer's own pages are touched (the root table and the method's tables); segments
  // with the weights that follow it are never read.
  const Flatbuffer fb(bytes, static_cast<size_t>(st.st_size));
  bool found = false;
  if (std::memcmp(bytes + 4, "ET", 2) != 0) {
    *problem = "no ExecuTorch program identifier";
  } else {
    size_t plans = 0;
    uint32_t plan_count = 0;
    uint32_t root = 0;  // the root table's offset is the buffer's first word
    if (!fb.u32(0, &root) || root >= static_cast<uint64_t>(st.st_size)) root = 0;
    if (root == 0 || !fb.vector(root, kProgramExecutionPlan, &plans, &plan_count)) {
      *problem = "no execution plans";
    }
    for (uint32_t p = 0; p < plan_count && !found; ++p) {
      const size_t plan = fb.deref(plans + 4 * p);
      if (plan == 0 || fb.string(plan, kPlanName) != method) continue;
      found = true;
      size_t first = 0;
      uint32_t count = 0;
      if (fb.vector(plan, kPlanOperators, &first, &count)) {
        for (uint32_t i = 0; i < count; ++i) {
          const size_t op = fb.deref(first + 4 * i);
          const std::string overload = fb.string(op, kOperatorOverload);
          out->operators.push_back(fb.string(op, kOperatorName) + (overload.empty() ? "" : "." + overload));
        }
      }
      if (fb.vector(plan, kPlanDelegates, &first, &count)) {
        for (uint32_t i = 0; i < count; ++i) out->delegates.push_back(fb.string(fb.deref(first + 4 * i), kDelegateId));
      }
    }
    if (!found && problem->empty()) *problem = "no method '" + method + "'";
  }
  munmap(map, static_cast<size_t>(st.st_size));
  return found;
}

}  // namespace edgekit
