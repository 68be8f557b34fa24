// Internal to net/: a pass-through stream layer under a server WebSocket that refuses a client's close code above
// 4999. RFC 6455 §7.4 defines no code there, and a peer that sends one fails the connection with 1002; Beast takes
// such codes as valid and echoes them back. Beast's control callback sees the code first and calls refuse_close();
// the close frame Beast then writes (its echo) goes out as 1002 "Invalid close code" instead. Everything else is
// forwarded untouched.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket/teardown.hpp>

namespace sw::net {

template <class Next>
class close_code_filter {
public:
  using next_layer_type = Next;
  using executor_type = typename Next::executor_type;

  explicit close_code_filter(Next&& next) : next_(std::move(next)) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  Next& next_layer() noexcept { return next_; }
  const Next& next_layer() const noexcept { return next_; }

  // The next close frame written is a refusal (1002), whatever code it carries.
  void refuse_close() { refuse_ = true; }

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return next_.async_read_some(buffers, std::forward<Token>(token));
  }

  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const Buffers& b) {
          const std::size_t size = refuse_ ? boost::asio::buffer_size(b) : 0;  // every write passes here
          if (!refuse_ || !is_close_frame(b, size)) {
            next_.async_write_some(b, std::move(handler));
            return;
          }
          refuse_ = false;
          // An unmasked close frame: 1002 and its reason. Reported to Beast as its own frame, written whole.
          static constexpr char reason[] = "Invalid close code";
          frame_[0] = '\x88';
          frame_[1] = static_cast<char>(2 + sizeof reason - 1);
          frame_[2] = '\x03';
          frame_[3] = '\xea';
          std::memcpy(frame_.data() + 4, reason, sizeof reason - 1);
          auto ex = boost::asio::get_associated_executor(handler, next_.get_executor());
          boost::asio::async_write(
              next_, boost::asio::buffer(frame_.data(), 4 + sizeof reason - 1),
              boost::asio::bind_executor(
                  ex, [h = std::move(handler), size](boost::system::error_code ec, std::size_t) mutable {
                    std::move(h)(ec, ec ? std::size_t(0) : size);
                  }));
        },
        token, buffers);
  }

private:
  // The whole of one server close frame (Beast writes a control frame in one buffer): 0x88, a 7-bit length, the
  // payload; nothing else is touched, even while a refusal waits.
  template <class Buffers>
  static bool is_close_frame(const Buffers& b, std::size_t size) {
    if (size < 4 || size > 127) return false;
    unsigned char head[2];
    boost::asio::buffer_copy(boost::asio::buffer(head), b);
    return head[0] == 0x88 && head[1] < 126 && std::size_t(head[1]) + 2 == size;
  }

  Next next_;
  bool refuse_ = false;
  std::array<char, 32> frame_{};
};

template <class Next>
void teardown(boost::beast::role_type role, close_code_filter<Next>& s, boost::system::error_code& ec) {
  using boost::beast::websocket::teardown;
  teardown(role, s.next_layer(), ec);
}

template <class Next, class Handler>
void async_teardown(boost::beast::role_type role, close_code_filter<Next>& s, Handler&& handler) {
  using boost::beast::websocket::async_teardown;
  async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
}

}  // namespace sw::net
