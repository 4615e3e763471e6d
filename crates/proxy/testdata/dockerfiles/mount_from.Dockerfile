FROM reg.example/a:1
RUN --mount=type=bind,from=reg.example/m:1,target=/t true
