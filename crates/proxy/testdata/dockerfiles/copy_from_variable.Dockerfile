ARG T=x
FROM reg.example/a:1
COPY --from=$T /f /g
