#pragma once

namespace infermesh::proxy {

// What a worker needs from any client connection, whatever its protocol:
// graceful drain and a hard close. Connections register themselves with
// their worker while they live.
class DownstreamConnection {
 public:
  virtual ~DownstreamConnection() = default;
  // Stop taking new requests; finish those in flight, then close.
  virtual void drain() = 0;
  // Close now; streams still working upstream are told the client is gone.
  virtual void close() = 0;
};

}  // namespace infermesh::proxy
