FROM reg.example/a:1
RUN <<EOF
FROM reg.example/evil:1
EOF
