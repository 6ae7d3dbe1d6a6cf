// The filter chain's own cost: one stream's request and response events
// (headers, one body chunk each way, trailers, completion and log) through
// N no-op filters. The slope is the cost of one more filter.
#include <benchmark/benchmark.h>

#include "proxy/filter/filter_manager.h"

namespace infermesh::filter {
namespace {

class NoOp final : public StreamFilter {};

void BM_ChainPerStream(benchmark::State& state) {
  const auto filters = static_cast<std::size_t>(state.range(0));
  const std::string body(620, 'x');
  for (auto _ : state) {
    StreamContext ctx;
    std::vector<std::unique_ptr<StreamFilter>> chain;
    chain.reserve(filters);
    for (std::size_t i = 0; i < filters; ++i) chain.push_back(std::make_unique<NoOp>());
    FilterManager fm(ctx, std::move(chain));
    fm.requestHeaders(false);
    BodyChunk request(body);
    fm.requestBody(request, true);
    ResponseHead head;
    head.status = 200;
    fm.responseHeaders(head, false);
    BodyChunk response(body);
    fm.responseBody(response, true);
    fm.log();
    benchmark::DoNotOptimize(response.view().data());
  }
}
BENCHMARK(BM_ChainPerStream)->Arg(0)->Arg(1)->Arg(5)->Arg(10);

}  // namespace
}  // namespace infermesh::filter
