// Include RapidJSON only through this header: type errors become exceptions instead of silent garbage
// under NDEBUG (stack-notes §8), identically in every translation unit.
#pragma once

#include <stdexcept>

#ifndef RAPIDJSON_ASSERT
#define RAPIDJSON_ASSERT(x)                             \
  do {                                                  \
    if (!(x)) throw std::logic_error("rapidjson: " #x); \
  } while (false)
#endif
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
