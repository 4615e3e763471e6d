FROM reg.example/a:1
COPY --from=reg.example/tools:2 /f /g
