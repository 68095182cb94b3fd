// What a .pte method needs from the runtime: the operators its kernel calls name and the delegates
// (backends) it calls, read straight from the program's flatbuffer (schema/program.fbs of ExecuTorch:
// Program.execution_plan[].operators[] {name, overload} and .delegates[] {id}).
//
// ExecuTorch's loader stops at the first operator it cannot resolve and names it only in its log;
// reading the list up front lets the runner name every missing operator in one line. A reader of the
// few fields it needs, bounds-checked against the file; it must not interpret anything else.
#pragma once

#include <string>
#include <vector>

namespace edgekit {

struct PteContents {
  std::vector<std::string> operators;  // "aten::add.out", "llama::custom_sdpa.out", ...
  std::vector<std::string> delegates;  // "XnnpackBackend", ...
};

// The method's operators and delegates; false (and *problem) when the file is not a readable program
// or has no such method.
bool read_pte_contents(const std::string& path, const std::string& method, PteContents* out, std::string* problem);

}  // namespace edgekit
