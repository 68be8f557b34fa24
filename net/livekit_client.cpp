#include "net/livekit_client.hpp"

#include "proto/time.hpp"

namespace sw::net {

livekit_client::livekit_client(settings s, std::shared_ptr<outbound> out) : s_(std::move(s)), out_(std::move(out)) {
  while (!s_.url.empty() && s_.url.back() == '/') s_.url.pop_back();
}

void livekit_client::call(const std::string& service, const std::string& method, const std::string& json,
                          const livekit_grant& grant, std::function<void(livekit_reply)> done) const {
  auto token = livekit_access_token(s_.api_key, s_.api_secret, grant, now_ms() / 1000);
  header_list headers{{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}};
  client_options opts;
  opts.ca_file = s_.ca_file;
  opts.timeout = s_.timeout;
  const std::string what = service + "/" + method;
  out_->fetch(s_.url + "/twirp/livekit." + service + "/" + method, "POST", std::move(headers), json, opts,
              [done = std::move(done), what](http_outcome o) {
                livekit_reply r;
                r.status = o.ok ? o.status : 0;
                r.body = std::move(o.body);
                r.ok = o.ok && o.status == 200;
                if (!o.ok)
                  r.error = what + ": LiveKit unreachable: " + o.error;
                else if (!r.ok)
                  r.error = what + ": " + livekit_error_message(o.status, r.body);
                done(std::move(r));
              });
}

}  // namespace sw::net
