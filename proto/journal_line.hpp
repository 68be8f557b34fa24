// The records of the persistence journal as JSON, one per line (the line's framing, "F <seq> <json>", and the
// segment files are storage/journal's business). Short keys: a journal line is written for every final.
#pragma once

#include <string>
#include <string_view>

#include "proto/messages.hpp"

namespace sw {

std::string encode_journal_record(const final_record& f);
std::string encode_journal_record(const usage_record& u);
// False for what is not such a record (a damaged line): no final without room and utterance, no usage without
// room. Counts that are not whole numbers from 0 read as 0.
bool decode_journal_record(std::string_view json, final_record& f);
bool decode_journal_record(std::string_view json, usage_record& u);

}  // namespace sw
