"""The edge gateway: routes model and loader, router, upstream pools, proxy, admin, the ASGI app."""
