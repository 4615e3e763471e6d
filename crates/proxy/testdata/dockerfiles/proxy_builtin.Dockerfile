FROM reg.example/a:$HTTPS_PROXY
