#pragma once

#include <chrono>
#include <string>

namespace infermesh::controlplane {

// "2026-12-03T19:20:01Z": UTC, whole seconds, as status shows times.
std::string isoTime(std::chrono::system_clock::time_point t);

}  // namespace infermesh::controlplane
