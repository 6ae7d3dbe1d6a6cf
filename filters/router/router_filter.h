#pragma once

// The "router" filter registers itself (router_filter.cc): the terminal
// filter that reads the model from the body, matches a route, and forwards
// to the model's endpoints. Its parts are usable on their own:
// route_matcher.h, model_extractor.h, model_selector.h, grpc_message.h.
